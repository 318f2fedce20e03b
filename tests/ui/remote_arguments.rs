#[farcall::remote(something)]
trait Api {
    async fn ping(&self);
}

fn main() {}
