//! The proc-macro behind `stepping_zset::row!`: it gives each struct or
//! enum it is handed everything a Z-set row needs, in one line, so that a
//! row type is written once and cannot miss a derive.
//!
//! Use it through `stepping_zset::row!` (re-exported by the operators'
//! prelude), never directly: that wrapper hands this macro the path of the
//! `stepping-zset` crate as its first token group, so the serde derives
//! work without a `serde` dependency in the user's crate, however the user
//! named `stepping-zset` in their `Cargo.toml`.
//!
//! This is the bottom layer's helper: no runtime code, only code
//! generation. Float fields are refused with an error that says what to
//! use instead (`F64`), since `f64` has no total order and two zeros.
#![deny(missing_docs)]

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{Data, DeriveInput, Fields};

/// Items given to `row!`, after the crate path.
struct Rows {
    krate: TokenStream,
    items: Vec<DeriveInput>,
}

impl Parse for Rows {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let krate = match input.parse::<TokenTree>()? {
            TokenTree::Group(g) => g.stream(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "use `stepping_zset::row!`, not this macro directly",
                ));
            }
        };
        let mut items = Vec::new();
        while !input.is_empty() {
            items.push(input.parse()?);
        }
        Ok(Rows { krate, items })
    }
}

/// `row!`'s implementation: `[path of stepping-zset] item...`. Each item
/// (a struct or enum) gets `Clone, PartialEq, Eq, PartialOrd, Ord, Hash,
/// Debug, Serialize, Deserialize`, its serde code pointed at the serde
/// that `stepping-zset` re-exports.
#[proc_macro]
pub fn row(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let rows = syn::parse_macro_input!(input as Rows);
    let mut out = TokenStream::new();
    for item in &rows.items {
        out.extend(expand(&rows.krate, item));
    }
    out.into()
}

fn expand(krate: &TokenStream, item: &DeriveInput) -> TokenStream {
    let mut errors = TokenStream::new();
    match &item.data {
        Data::Struct(s) => check_fields(&s.fields, &mut errors),
        Data::Enum(e) => {
            for v in &e.variants {
                check_fields(&v.fields, &mut errors);
            }
        }
        Data::Union(u) => {
            return syn::Error::new(
                u.union_token.span,
                "a row is a struct or an enum: a union has no equality or order",
            )
            .to_compile_error();
        }
    }
    if !errors.is_empty() {
        // The item without derives: the float's error alone, not one more
        // for each trait `f64` lacks.
        return quote! { #errors #item };
    }
    let name = &item.ident;
    // serde's generated code names its crate through this `use`; one per
    // row type, so that several rows can live in one module.
    let alias = format_ident!("__stepping_serde_{}", name, span = Span::call_site());
    let alias_text = alias.to_string();
    quote! {
        #[derive(
            ::core::clone::Clone,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::cmp::PartialOrd,
            ::core::cmp::Ord,
            ::core::hash::Hash,
            ::core::fmt::Debug,
            #krate::__private::Serialize,
            #krate::__private::Deserialize
        )]
        #[serde(crate = #alias_text)]
        #item
        #[doc(hidden)]
        #[allow(unused_imports, non_camel_case_types)]
        use #krate::__private::serde as #alias;
    }
}

/// An error at every `f32`/`f64` in a field's type.
fn check_fields(fields: &Fields, errors: &mut TokenStream) {
    for (i, field) in fields.iter().enumerate() {
        let name = field
            .ident
            .as_ref()
            .map_or_else(|| i.to_string(), ToString::to_string);
        let mut floats = Vec::new();
        find_floats(field.ty.to_token_stream(), &mut floats);
        for (span, ty) in floats {
            let message = format!(
                "row field `{name}` holds an `{ty}`, which has no total order and two zeros: \
                 use `F64` (`F64::new(x)` to make one, `.get()` to read it), which orders NaN \
                 last and stores -0.0 as 0.0, so equal numbers are equal rows in every store"
            );
            errors.extend(quote_spanned! {span=> ::core::compile_error!(#message);});
        }
    }
}

fn find_floats(tokens: TokenStream, out: &mut Vec<(Span, String)>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) if i == "f64" || i == "f32" => out.push((i.span(), i.to_string())),
            TokenTree::Group(g) => find_floats(g.stream(), out),
            _ => {}
        }
    }
}
