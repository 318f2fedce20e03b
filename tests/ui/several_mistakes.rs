#[farcall::remote]
trait Api {
    fn ping(&self);
    async fn greet(&self, name: &str);
    async fn bump(&mut self);
}

fn main() {}
