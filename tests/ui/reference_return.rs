#[farcall::remote]
trait Api {
    async fn name(&self) -> &str;
}

fn main() {}
