#[farcall::remote]
trait Api {
    fn ping(&self);
}

fn main() {}
