use std::borrow::Cow;

#[farcall::remote]
trait Api {
    async fn greet(&self, name: Cow<'_, str>);
}

fn main() {}
