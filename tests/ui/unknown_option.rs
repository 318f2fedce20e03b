#[farcall::remote]
trait Api {
    #[farcall(retry)]
    async fn ping(&self);
}

fn main() {}
