#[farcall::remote]
trait Api {
    async extern "C" fn ping(&self);
}

fn main() {}
