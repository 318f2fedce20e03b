#[farcall::remote]
trait Api {
    #[farcall(oneway)]
    async fn next(&self) -> u64;
}

fn main() {}
