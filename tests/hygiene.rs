//! The code `#[farcall::remote]` generates must compile wherever the user's trait
//! does, and work there: under `#![no_implicit_prelude]`, beside user types that
//! shadow std names, with raw identifiers, and with default method bodies.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use farcall::{CallError, Connection};

/// Runs a test body, failing it if it hangs.
async fn within_10s(body: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("test timed out");
}

/// (a) No prelude: the expansion must name everything by full path.
mod bare {
    #![no_implicit_prelude]

    /// A trait whose expansion has no prelude to lean on.
    #[::farcall::remote]
    pub trait Bare {
        /// Echoes its argument.
        async fn echo(&self, text: ::std::string::String) -> ::std::string::String;
        /// Fails on zero.
        async fn check(&self, n: u32) -> ::std::result::Result<u32, ::std::string::String>;
        /// One-way: adds to a counter.
        #[farcall(oneway)]
        async fn poke(&self, by: u32);
        /// Reads the counter.
        async fn count(&self) -> u32;
        /// Has a default body, also written without the prelude.
        async fn items(&self, n: u32) -> ::std::vec::Vec<u32> {
            ::std::iter::Iterator::collect(0..n)
        }
    }
}

/// Implemented outside the prelude-less module, as a user normally would.
#[derive(Default)]
struct BareImpl {
    count: AtomicU32,
}

impl bare::Bare for BareImpl {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn check(&self, n: u32) -> Result<u32, String> {
        if n == 0 {
            Err("zero".to_string())
        } else {
            Ok(n)
        }
    }

    async fn poke(&self, by: u32) {
        self.count.fetch_add(by, Ordering::SeqCst);
    }

    async fn count(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn works_without_the_prelude() {
    within_10s(async {
        let (a, b) = farcall::transport::memory();
        let _s = Connection::builder()
            .root(bare::BareServer::new(BareImpl::default()))
            .connect(a);
        let c: bare::BareClient = Connection::builder().connect(b).root().await.unwrap();

        assert_eq!(c.echo("hi".to_string()).await.unwrap(), "hi");
        assert_eq!(c.check(7).await.unwrap(), 7);
        assert_eq!(c.check(0).await, Err(CallError::App("zero".to_string())));
        c.poke(3).unwrap();
        c.poke(4).unwrap();
        assert_eq!(c.count().await.unwrap(), 7);
        assert_eq!(c.items(3).await.unwrap(), vec![0, 1, 2]);
    })
    .await;
}

/// (b) User types named like the std and core items the expansion uses.
mod shadowed {
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct Result;
    pub struct Option;
    pub struct Vec;
    pub struct String;
    pub struct Box;
    pub struct Arc;
    pub struct Clone;
    pub struct Send;
    pub struct Sync;
    pub struct Future;

    /// A trait declared where `Result`, `Option`, `Vec` and friends are user structs.
    #[farcall::remote]
    pub trait Shadowed {
        /// Sums a list.
        async fn sum(&self, xs: std::vec::Vec<u32>) -> u32;
        /// Unwraps an option, failing on `None`.
        async fn get(
            &self,
            x: std::option::Option<u32>,
        ) -> std::result::Result<u32, std::string::String>;
        /// One-way: stores a value.
        #[farcall(oneway)]
        async fn set(&self, x: u32);
        /// Reads the stored value.
        async fn stored(&self) -> u32;
    }

    #[derive(Default)]
    pub struct Impl {
        value: AtomicU32,
    }

    impl Shadowed for Impl {
        async fn sum(&self, xs: std::vec::Vec<u32>) -> u32 {
            xs.iter().sum()
        }

        async fn get(
            &self,
            x: std::option::Option<u32>,
        ) -> std::result::Result<u32, std::string::String> {
            x.ok_or_else(|| "none".into())
        }

        async fn set(&self, x: u32) {
            self.value.store(x, Ordering::SeqCst);
        }

        async fn stored(&self) -> u32 {
            self.value.load(Ordering::SeqCst)
        }
    }

    /// Uses the shadowing types, so they are not dead code.
    pub fn all() -> (
        Result,
        Option,
        Vec,
        String,
        Box,
        Arc,
        Clone,
        Send,
        Sync,
        Future,
    ) {
        (
            Result, Option, Vec, String, Box, Arc, Clone, Send, Sync, Future,
        )
    }
}

#[tokio::test]
async fn works_beside_shadowing_types() {
    within_10s(async {
        let _ = shadowed::all();
        let (a, b) = farcall::transport::memory();
        let _s = Connection::builder()
            .root(shadowed::ShadowedServer::new(shadowed::Impl::default()))
            .connect(a);
        let c: shadowed::ShadowedClient = Connection::builder().connect(b).root().await.unwrap();

        assert_eq!(c.sum(vec![1, 2, 3]).await.unwrap(), 6);
        assert_eq!(c.get(Some(5)).await.unwrap(), 5);
        assert_eq!(c.get(None).await, Err(CallError::App("none".to_string())));
        c.set(42).unwrap();
        assert_eq!(c.stored().await.unwrap(), 42);
    })
    .await;
}

/// (c) Raw identifiers as trait, method and argument names, and (d) default bodies.
#[farcall::remote]
pub trait r#Keywords {
    /// A keyword as method name and as argument name.
    async fn r#type(&self, r#in: u32) -> u32;
    /// Several keyword arguments.
    async fn r#match(&self, r#fn: String, r#loop: u32) -> String;
    /// One-way with a keyword name.
    #[farcall(oneway)]
    async fn r#move(&self, r#ref: u32);
    /// Reads what `move` stored.
    async fn r#where(&self) -> u32;
    /// A default body, not overridden by the implementation.
    async fn double(&self, x: u32) -> u32 {
        x * 2
    }
    /// A default body that calls another method of the trait.
    async fn type_twice(&self, r#as: u32) -> u32 {
        self.r#type(r#as).await + self.r#type(r#as).await
    }
    /// A default body that the implementation overrides.
    async fn overridden(&self) -> u32 {
        0
    }
}

#[derive(Default)]
struct KeywordsImpl {
    moved: AtomicU32,
}

impl Keywords for KeywordsImpl {
    async fn r#type(&self, r#in: u32) -> u32 {
        r#in + 1
    }

    async fn r#match(&self, r#fn: String, r#loop: u32) -> String {
        r#fn.repeat(r#loop as usize)
    }

    async fn r#move(&self, r#ref: u32) {
        self.moved.store(r#ref, Ordering::SeqCst);
    }

    async fn r#where(&self) -> u32 {
        self.moved.load(Ordering::SeqCst)
    }

    async fn overridden(&self) -> u32 {
        1
    }
}

#[tokio::test]
async fn raw_identifiers_and_default_bodies() {
    within_10s(async {
        let (a, b) = farcall::transport::memory();
        let _s = Connection::builder()
            .root(KeywordsServer::new(KeywordsImpl::default()))
            .connect(a);
        let c: KeywordsClient = Connection::builder().connect(b).root().await.unwrap();

        assert_eq!(c.r#type(1).await.unwrap(), 2);
        assert_eq!(c.r#match("ab".to_string(), 3).await.unwrap(), "ababab");
        c.r#move(9).unwrap();
        assert_eq!(c.r#where().await.unwrap(), 9);
        assert_eq!(c.double(21).await.unwrap(), 42);
        assert_eq!(c.type_twice(10).await.unwrap(), 22);
        assert_eq!(c.overridden().await.unwrap(), 1);
    })
    .await;
}

/// (e) Arguments named like the locals and parameters of the generated code.
#[farcall::remote]
pub trait Locals {
    /// Every such name at once, in a fallible method (whose server code has the most
    /// locals).
    #[allow(clippy::too_many_arguments)]
    async fn all(
        &self,
        __this: u32,
        __args: u32,
        self_: u32,
        __call: u32,
        __methods: u32,
        __value: u32,
        __error: u32,
        __client: u32,
        imp: String,
        client: String,
        serializer: String,
        deserializer: String,
        state: String,
        f: String,
        other: String,
    ) -> Result<String, String>;
    /// One-way, with the server's locals as names.
    #[farcall(oneway)]
    async fn set(&self, __this: u32, __args: u32);
    /// Reads what `set` stored.
    async fn stored(&self) -> (u32, u32);
    /// A default body that uses the names.
    async fn swap(&self, __this: u32, __args: u32) -> (u32, u32) {
        (__args, __this)
    }
}

#[derive(Default)]
struct LocalsImpl {
    stored: std::sync::Mutex<(u32, u32)>,
}

impl Locals for LocalsImpl {
    async fn all(
        &self,
        __this: u32,
        __args: u32,
        self_: u32,
        __call: u32,
        __methods: u32,
        __value: u32,
        __error: u32,
        __client: u32,
        imp: String,
        client: String,
        serializer: String,
        deserializer: String,
        state: String,
        f: String,
        other: String,
    ) -> Result<String, String> {
        let numbers = [
            __this, __args, self_, __call, __methods, __value, __error, __client,
        ];
        let words = [imp, client, serializer, deserializer, state, f, other];
        if __this == 0 {
            return Err(format!("{words:?}"));
        }
        Ok(format!("{numbers:?} {words:?}"))
    }

    async fn set(&self, __this: u32, __args: u32) {
        *self.stored.lock().unwrap() = (__this, __args);
    }

    async fn stored(&self) -> (u32, u32) {
        *self.stored.lock().unwrap()
    }
}

#[tokio::test]
async fn arguments_named_like_generated_locals() {
    within_10s(async {
        let (a, b) = farcall::transport::memory();
        let _s = Connection::builder()
            .root(LocalsServer::new(LocalsImpl::default()))
            .connect(a);
        let c: LocalsClient = Connection::builder().connect(b).root().await.unwrap();

        let words = || ["i", "c", "s", "d", "st", "f", "o"].map(String::from);
        let [imp, client, serializer, deserializer, state, f, other] = words();
        let reply = c
            .all(
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                imp,
                client,
                serializer,
                deserializer,
                state,
                f,
                other,
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            r#"[1, 2, 3, 4, 5, 6, 7, 8] ["i", "c", "s", "d", "st", "f", "o"]"#
        );
        let [imp, client, serializer, deserializer, state, f, other] = words();
        assert_eq!(
            c.all(
                0,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                imp,
                client,
                serializer,
                deserializer,
                state,
                f,
                other
            )
            .await,
            Err(CallError::App(
                r#"["i", "c", "s", "d", "st", "f", "o"]"#.to_string()
            ))
        );
        c.set(10, 20).unwrap();
        assert_eq!(c.stored().await.unwrap(), (10, 20));
        assert_eq!(c.swap(1, 2).await.unwrap(), (2, 1));
    })
    .await;
}
