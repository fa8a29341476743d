//! Records this store cannot decode (see "Unreadable records" in
//! [`sessiond_core::store`]): counted and reported by the shared
//! [`sessiond_core::backend::Unreadable`], never logging their content.

pub(crate) use sessiond_core::backend::{describe, Unreadable};
