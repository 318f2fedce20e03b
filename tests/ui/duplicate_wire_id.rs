// `abky` and `ackl` hash to the same 20 name bits of a method id.
#[farcall::remote]
trait Api {
    async fn abky(&self);
    async fn ackl(&self);
}

fn main() {}
