//! The rules a `#[remote]` trait must follow, applied to the finished model: one
//! `check_*` function per rule, each error spanned on the offending tokens and saying
//! what to write instead. Every rule runs, so one compile reports every mistake.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit::Visit;
use syn::{Pat, ReturnType, Type};

use crate::errors::Errors;
use crate::model::{RemoteMethod, RemoteTrait, Ret};

/// The rules about the trait as a whole, in the order they are reported.
const TRAIT_RULES: &[fn(&RemoteTrait<'_>, &mut Errors)] = &[
    check_no_attribute_arguments,
    check_trait_not_generic,
    check_trait_not_unsafe,
    check_trait_not_auto,
    check_only_methods,
];

/// The rules about one method, in the order they are reported.
const METHOD_RULES: &[fn(&RemoteMethod<'_>, &mut Errors)] = &[
    check_async,
    check_not_const,
    check_not_unsafe,
    check_no_abi,
    check_not_variadic,
    check_no_generics,
    check_receiver,
    check_known_options,
    check_plain_argument_names,
    check_no_impl_trait,
    check_owned_types,
    check_oneway_returns_nothing,
];

/// Applies every rule to the model.
pub(crate) fn check(model: &RemoteTrait<'_>, errors: &mut Errors) {
    for rule in TRAIT_RULES {
        rule(model, errors);
    }
    for method in &model.methods {
        for rule in METHOD_RULES {
            rule(method, errors);
        }
    }
    check_unique_ids(model, errors);
}

fn error(span: impl ToTokens, message: &str) -> syn::Error {
    syn::Error::new_spanned(span, message)
}

/// Options go on methods: the attribute itself has nothing to configure.
fn check_no_attribute_arguments(model: &RemoteTrait<'_>, errors: &mut Errors) {
    if !model.attr_args.is_empty() {
        errors.push(error(
            &model.attr_args,
            "`#[farcall::remote]` takes no arguments; write `#[farcall::remote]`",
        ));
    }
}

/// Both sides of a connection must agree on one interface.
fn check_trait_not_generic(model: &RemoteTrait<'_>, errors: &mut Errors) {
    let generics = &model.item.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        errors.push(error(
            generics,
            "a remote trait cannot be generic: both sides must agree on one interface; use concrete types",
        ));
    }
}

/// A peer cannot be held to the contract of an `unsafe` trait.
fn check_trait_not_unsafe(model: &RemoteTrait<'_>, errors: &mut Errors) {
    if let Some(unsafety) = &model.item.unsafety {
        errors.push(error(
            unsafety,
            "a remote trait cannot be `unsafe`; remove `unsafe`",
        ));
    }
}

/// An auto trait has no methods to call.
fn check_trait_not_auto(model: &RemoteTrait<'_>, errors: &mut Errors) {
    if let Some(auto) = &model.item.auto_token {
        errors.push(error(
            auto,
            "a remote trait cannot be an `auto` trait; remove `auto`",
        ));
    }
}

/// Constants, types and macros have no meaning across a connection.
fn check_only_methods(model: &RemoteTrait<'_>, errors: &mut Errors) {
    for item in &model.others {
        errors.push(error(
            item,
            "a remote trait may only contain methods; move constants and types out of the trait",
        ));
    }
}

/// The call crosses a connection, so the caller awaits it.
fn check_async(method: &RemoteMethod<'_>, errors: &mut Errors) {
    let sig = &method.item.sig;
    if sig.asyncness.is_none() {
        errors.push(error(
            sig.fn_token,
            "remote methods must be async: write `async fn` (the call crosses a connection)",
        ));
    }
}

/// A call to another process cannot run at compile time.
fn check_not_const(method: &RemoteMethod<'_>, errors: &mut Errors) {
    if let Some(constness) = &method.item.sig.constness {
        errors.push(error(
            constness,
            "remote methods cannot be `const`; remove `const`",
        ));
    }
}

/// A peer cannot be held to the contract of an `unsafe` method.
fn check_not_unsafe(method: &RemoteMethod<'_>, errors: &mut Errors) {
    if let Some(unsafety) = &method.item.sig.unsafety {
        errors.push(error(
            unsafety,
            "remote methods cannot be `unsafe`; remove `unsafe`",
        ));
    }
}

/// The wire carries the call, not a calling convention.
fn check_no_abi(method: &RemoteMethod<'_>, errors: &mut Errors) {
    if let Some(abi) = &method.item.sig.abi {
        errors.push(error(
            abi,
            "remote methods cannot declare an ABI; remove `extern`",
        ));
    }
}

/// A message has a fixed list of typed arguments.
fn check_not_variadic(method: &RemoteMethod<'_>, errors: &mut Errors) {
    if let Some(variadic) = &method.item.sig.variadic {
        errors.push(error(
            variadic,
            "remote methods cannot be variadic; take a `Vec<T>` instead",
        ));
    }
}

/// Both sides must agree on concrete types, and nothing borrowed crosses a connection.
fn check_no_generics(method: &RemoteMethod<'_>, errors: &mut Errors) {
    let generics = &method.item.sig.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        errors.push(error(
            generics,
            "remote methods cannot have generic or lifetime parameters; use concrete owned types",
        ));
    }
}

/// The object is shared by concurrent callers: it is neither consumed nor mutated.
fn check_receiver(method: &RemoteMethod<'_>, errors: &mut Errors) {
    match method.receiver {
        Some(r) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(r) if r.mutability.is_some() && r.reference.is_some() => errors.push(error(
            r,
            "remote methods take `&self`, not `&mut self`: calls may run concurrently, so keep state behind a `Mutex` or atomics",
        )),
        Some(r) => errors.push(error(
            r,
            "remote methods take `&self`: the object is shared by its callers, not consumed or boxed",
        )),
        None => errors.push(syn::Error::new(
            method.item.sig.paren_token.span.join(),
            "remote methods take `&self` first: write `(&self, ...)`",
        )),
    }
}

/// A misspelled option would otherwise change nothing, silently.
fn check_known_options(method: &RemoteMethod<'_>, errors: &mut Errors) {
    for path in &method.options.unknown {
        errors.push(error(
            path,
            &format!(
                "unknown farcall option `{}`; the supported options are `oneway` and `no_cancel`",
                path.to_token_stream()
            ),
        ));
    }
}

/// The client method restates each argument by name.
fn check_plain_argument_names(method: &RemoteMethod<'_>, errors: &mut Errors) {
    for arg in &method.args {
        match &*arg.item.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {
            }
            other => errors.push(error(
                other,
                "name each argument with a plain identifier: write `name: Type` (destructure inside the method)",
            )),
        }
    }
}

/// What crosses a connection needs one concrete type that both sides agree on.
fn check_no_impl_trait(method: &RemoteMethod<'_>, errors: &mut Errors) {
    for (ty, role) in typed_parts(method) {
        if let Some(tokens) = TypeParts::of(ty).impl_trait {
            errors.push(error(
                tokens,
                &format!("`impl Trait` is not supported as a remote {role} type; use a concrete serializable type"),
            ));
        }
    }
}

/// Values cross a connection: the other side has nothing to borrow from.
fn check_owned_types(method: &RemoteMethod<'_>, errors: &mut Errors) {
    for (ty, role) in typed_parts(method) {
        // An `impl Trait` type is reported by `check_no_impl_trait` alone.
        if let TypeParts {
            borrowed: Some(tokens),
            impl_trait: None,
        } = TypeParts::of(ty)
        {
            errors.push(error(
                tokens,
                &format!(
                    "remote {role} types must be owned (they cross a connection): write `String` instead of `&str`, `Vec<T>` instead of `&[T]`, and drop lifetimes"
                ),
            ));
        }
    }
}

/// A one-way call has no reply to carry a value.
fn check_oneway_returns_nothing(method: &RemoteMethod<'_>, errors: &mut Errors) {
    if method.options.oneway && !matches!(method.ret, Ret::Unit) {
        errors.push(error(
            &method.item.sig.output,
            "a `#[farcall(oneway)]` method returns nothing: remove the return type, or remove `oneway` to get a reply",
        ));
    }
}

/// Method ids begin with a hash of the name: two names must not collide there.
fn check_unique_ids(model: &RemoteTrait<'_>, errors: &mut Errors) {
    let name_bits = |id: u32| id >> crate::hash::SIGNATURE_BITS;
    let methods = &model.methods;
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

/// A method's argument types and its return type, each with its role in words.
fn typed_parts<'a, 'm>(
    method: &'m RemoteMethod<'a>,
) -> impl Iterator<Item = (&'a Type, &'static str)> + 'm {
    let returned = match &method.item.sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some((&**ty, "return")),
    };
    method
        .args
        .iter()
        .map(|arg| (arg.ty, "argument"))
        .chain(returned)
}

/// The first borrowed part and the first `impl Trait` of a type, as tokens so the
/// error underlines all of it.
#[derive(Default)]
struct TypeParts {
    borrowed: Option<TokenStream>,
    impl_trait: Option<TokenStream>,
}

impl TypeParts {
    fn of(ty: &Type) -> Self {
        let mut parts = TypeParts::default();
        parts.visit_type(ty);
        parts
    }
}

impl<'ast> Visit<'ast> for TypeParts {
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
