// `ecdy` and `kybn` hash to the same 32-bit method id.
#[farcall::remote]
trait Api {
    async fn ecdy(&self);
    async fn kybn(&self);
}

fn main() {}
