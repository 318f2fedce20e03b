#[farcall::remote]
trait Api {
    async fn bump(&mut self);
}

fn main() {}
