#[farcall::remote]
trait Api {
    const LIMIT: u32;
    async fn ping(&self);
}

fn main() {}
