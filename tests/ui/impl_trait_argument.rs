#[farcall::remote]
trait Api {
    async fn greet(&self, name: impl Into<String>);
}

fn main() {}
