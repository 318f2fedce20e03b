// One mistake in the trait is the only error: code that implements the trait,
// serves it, and gets and calls a client reports nothing more.
use farcall::Connection;

#[farcall::remote]
pub trait Api {
    async fn greet(&self, name: &str) -> String;
    async fn ping(&self);
}

struct Greeter;

impl Api for Greeter {
    async fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }

    async fn ping(&self) {}
}

async fn demo() -> Result<ApiClient, farcall::RpcError> {
    let (a, b) = farcall::transport::memory();
    let _server = Connection::builder()
        .root(ApiServer::new(Greeter))
        .connect(a);
    let client: ApiClient = Connection::builder().connect(b).root().await?;
    let _copy = client.clone();
    client.ping().await?;
    let _greeting: String = client.greet("you").await?;
    Ok(client)
}

fn main() {
    drop(demo());
}
