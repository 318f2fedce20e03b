#[farcall::remote]
trait Api {
    async fn create(size: u32);
}

fn main() {}
