#[farcall::remote]
trait Api {
    async fn put<'a>(&self, value: u32);
}

fn main() {}
