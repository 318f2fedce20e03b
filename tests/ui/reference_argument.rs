#[farcall::remote]
trait Api {
    async fn greet(&self, name: &str);
}

fn main() {}
