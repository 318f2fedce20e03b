//! The rules a `#[remote]` trait must follow: one function per rule, each error
//! spanned on the offending tokens and saying what to write instead.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit::Visit;
use syn::{Attribute, FnArg, ItemTrait, Pat, PatType, ReturnType, Signature, TraitItem, Type};

use crate::model::{is_farcall_attr, RemoteMethod};

/// Collects errors so that one compile reports every mistake.
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                all.for_each(|e| first.combine(e));
                Err(first)
            }
        }
    }
}

fn error(span: impl ToTokens, message: &str) -> syn::Error {
    syn::Error::new_spanned(span, message)
}

/// `#[remote]` takes no arguments: options go on methods.
pub(crate) fn attribute_args(args: TokenStream) -> syn::Result<()> {
    if args.is_empty() {
        return Ok(());
    }
    Err(error(
        args,
        "`#[farcall::remote]` takes no arguments; write `#[farcall::remote]`",
    ))
}

/// The trait itself: no generics, not `unsafe` or `auto`.
pub(crate) fn trait_shape(item: &ItemTrait, errors: &mut Errors) {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(error(
            &item.generics,
            "a remote trait cannot be generic: both sides must agree on one interface; use concrete types",
        ));
    }
    if let Some(unsafety) = &item.unsafety {
        errors.push(error(
            unsafety,
            "a remote trait cannot be `unsafe`; remove `unsafe`",
        ));
    }
    if let Some(auto) = &item.auto_token {
        errors.push(error(
            auto,
            "a remote trait cannot be an `auto` trait; remove `auto`",
        ));
    }
}

/// Only methods: constants, types and macros have no meaning across a connection.
pub(crate) fn not_a_method(item: &TraitItem) -> syn::Error {
    error(
        item,
        "a remote trait may only contain methods; move constants and types out of the trait",
    )
}

/// `async fn name(&self, ...)`, without generics, qualifiers or variadics.
pub(crate) fn signature(sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push(error(
            sig.fn_token,
            "remote methods must be async: write `async fn` (the call crosses a connection)",
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(error(
            constness,
            "remote methods cannot be `const`; remove `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(error(
            unsafety,
            "remote methods cannot be `unsafe`; remove `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(error(
            abi,
            "remote methods cannot declare an ABI; remove `extern`",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(error(
            variadic,
            "remote methods cannot be variadic; take a `Vec<T>` instead",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(error(
            &sig.generics,
            "remote methods cannot have generic or lifetime parameters; use concrete owned types",
        ));
    }
    receiver(sig, errors);
}

fn receiver(sig: &Signature, errors: &mut Errors) {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some() => errors.push(error(
            r,
            "remote methods take `&self`, not `&mut self`: calls may run concurrently, so keep state behind a `Mutex` or atomics",
        )),
        Some(FnArg::Receiver(r)) => errors.push(error(
            r,
            "remote methods take `&self`: the object is shared by its callers, not consumed or boxed",
        )),
        _ => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            "remote methods take `&self` first: write `(&self, ...)`",
        )),
    }
}

/// An argument is `name: OwnedType`.
pub(crate) fn argument(arg: &PatType, errors: &mut Errors) {
    match &*arg.pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {}
        other => errors.push(error(
            other,
            "name each argument with a plain identifier: write `name: Type` (destructure inside the method)",
        )),
    }
    owned_type(&arg.ty, "argument", errors);
}

/// The return type is owned.
pub(crate) fn return_type(ty: &Type, errors: &mut Errors) {
    owned_type(ty, "return", errors);
}

fn owned_type(ty: &Type, role: &str, errors: &mut Errors) {
    let mut finder = Borrowed::default();
    finder.visit_type(ty);
    if let Some(tokens) = finder.impl_trait {
        errors.push(syn::Error::new_spanned(
            tokens,
            format!("`impl Trait` is not supported as a remote {role} type; use a concrete serializable type"),
        ));
    } else if let Some(tokens) = finder.borrowed {
        errors.push(syn::Error::new_spanned(
            tokens,
            format!(
                "remote {role} types must be owned (they cross a connection): write `String` instead of `&str`, `Vec<T>` instead of `&[T]`, and drop lifetimes"
            ),
        ));
    }
}

/// Finds the first borrowed part and the first `impl Trait` of a type, as tokens so
/// the error underlines all of it.
#[derive(Default)]
struct Borrowed {
    borrowed: Option<TokenStream>,
    impl_trait: Option<TokenStream>,
}

impl<'ast> Visit<'ast> for Borrowed {
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        self.borrowed.get_or_insert_with(|| r.to_token_stream());
    }
    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        if l.ident != "static" {
            self.borrowed.get_or_insert_with(|| l.to_token_stream());
        }
    }
    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        self.impl_trait.get_or_insert_with(|| t.to_token_stream());
    }
}

/// The `#[farcall(...)]` options of a method.
#[derive(Default)]
pub(crate) struct Options {
    /// `oneway`: no reply.
    pub(crate) oneway: bool,
    /// `no_cancel`: runs to completion even if the caller gives up.
    pub(crate) no_cancel: bool,
}

/// Reads `#[farcall(...)]` options.
pub(crate) fn options(attrs: &[Attribute], errors: &mut Errors) -> Options {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| is_farcall_attr(a)) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("oneway") {
                options.oneway = true;
                Ok(())
            } else if meta.path.is_ident("no_cancel") {
                options.no_cancel = true;
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown farcall option `{}`; the supported options are `oneway` and `no_cancel`",
                    meta.path.to_token_stream()
                )))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    options
}

/// A one-way method has no reply, so it cannot return anything.
pub(crate) fn oneway_returns(output: &ReturnType) -> syn::Error {
    error(
        output,
        "a `#[farcall(oneway)]` method returns nothing: remove the return type, or remove `oneway` to get a reply",
    )
}

/// Method ids begin with a hash of the name: two names must not collide there.
pub(crate) fn unique_ids(methods: &[RemoteMethod<'_>], errors: &mut Errors) {
    let name_bits = |id: u32| id >> crate::hash::SIGNATURE_BITS;
    for (i, a) in methods.iter().enumerate() {
        if let Some(b) = methods[..i]
            .iter()
            .find(|b| name_bits(b.id) == name_bits(a.id))
        {
            errors.push(error(
                &a.item.sig.ident,
                &format!(
                    "method `{}` has the same wire id as `{}`; rename one of them",
                    a.name, b.name
                ),
            ));
        }
    }
}
