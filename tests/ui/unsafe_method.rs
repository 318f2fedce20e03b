#[farcall::remote]
trait Api {
    async unsafe fn ping(&self);
}

fn main() {}
