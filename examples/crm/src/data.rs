//! Run with: `cargo run -p crm` (this module is the CRM's datastore).
//!
//! The CRM's datastore, as in the 4D example: `SalesPersons` (an integer `userId`, a
//! name, an Argon2 password hash, privileges) and their `Customers` (with a total
//! purchase). Seeded with demo data; the hashes were made with `crm hash-password`, so
//! no plain password is stored anywhere but in the demo hint of the login page.

use std::cell::RefCell;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

/// A sales person who can log in.
#[derive(Debug, Clone)]
pub struct SalesPerson {
    /// The login id.
    pub user_id: u32,
    /// First name.
    pub firstname: &'static str,
    /// Last name.
    pub lastname: &'static str,
    /// Argon2id hash in PHC format.
    pub password_hash: &'static str,
    /// Whether this person administers the site (the `WebAdmin` privilege).
    pub web_admin: bool,
}

impl SalesPerson {
    /// "First Last".
    pub fn display_name(&self) -> String {
        format!("{} {}", self.firstname, self.lastname)
    }

    /// The session privileges this person gets at login.
    pub fn privileges(&self) -> Vec<String> {
        let mut p = vec![crate::SALES.to_string()];
        if self.web_admin {
            p.push(crate::WEB_ADMIN.to_string());
        }
        p
    }
}

/// A customer, as kept in session storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Company name.
    pub name: String,
    /// City.
    pub city: String,
    /// Total purchase, in euros.
    pub total_purchase: u64,
}

/// One demo login, shown on the login page.
#[derive(Debug, Clone, Copy)]
pub struct DemoLogin {
    /// The user id to type.
    pub user_id: u32,
    /// The password to type.
    pub password: &'static str,
}

/// The demo logins (their hashes are in [`Datastore::demo`]).
pub const DEMO_LOGINS: [DemoLogin; 3] = [
    DemoLogin {
        user_id: 1,
        password: "ann-demo-pass",
    },
    DemoLogin {
        user_id: 2,
        password: "bruno-demo-pass",
    },
    DemoLogin {
        user_id: 3,
        password: "chloe-demo-pass",
    },
];

/// Compared against when the user id is unknown, so both failures cost the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$85Uc/8HSo9AnyfDBThKdVg$0Ax6mN4BPEhqerYPWBoqlf3wn/tAwgdIq/OfbENsoiE";

/// The sales people and their customers.
#[derive(Debug)]
pub struct Datastore {
    sales: Vec<SalesPerson>,
    customers: Vec<(u32, Customer)>,
}

fn customer(owner: u32, name: &str, city: &str, total_purchase: u64) -> (u32, Customer) {
    let c = Customer {
        name: name.into(),
        city: city.into(),
        total_purchase,
    };
    (owner, c)
}

impl Datastore {
    /// The seeded demo data.
    pub fn demo() -> Datastore {
        let sales = vec![
            SalesPerson {
                user_id: 1,
                firstname: "Ann",
                lastname: "Martin",
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$txNIxtwi/g3+am4cv5Uccw$E2oiWSPB27Rsv+kt7/NFgd1AYSgCBO/qW69gVKN5xL8",
                web_admin: true,
            },
            SalesPerson {
                user_id: 2,
                firstname: "Bruno",
                lastname: "Petit",
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$tPpiq1Hq4j/wD3NZBaOfXA$Kiy+xTbArx75NuFQc3HXCgTv+9A9zLlCD3dFnB1ongI",
                web_admin: false,
            },
            SalesPerson {
                user_id: 3,
                firstname: "Chloé",
                lastname: "Durand",
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$7NEEiaZZ9NoXrj13Sk52GQ$78n/PN2R10LB54ZzFHaDrN85tniqOKQmdMGkE2mOjtY",
                web_admin: false,
            },
        ];
        let customers = vec![
            customer(1, "Acme Industries", "Lyon", 125_000),
            customer(1, "Blue Ocean Travel", "Nantes", 98_000),
            customer(1, "Cobalt Systems", "Grenoble", 143_500),
            customer(1, "Dune Foods", "Marseille", 45_000),
            customer(1, "Étoile SA", "Paris", 87_000),
            customer(2, "Fjord Shipping", "Le Havre", 54_000),
            customer(2, "Granit SARL", "Rennes", 230_000),
            customer(2, "Helios Energy", "Toulouse", 12_000),
            customer(2, "Iris Media", "Lille", 76_000),
            customer(3, "Jade Cosmetics", "Nice", 8_000),
            customer(3, "Kappa Robotics", "Bordeaux", 160_000),
            customer(3, "Lumen Optics", "Strasbourg", 99_000),
            customer(3, "Mistral Wind", "Montpellier", 101_000),
            customer(3, "Nova Pharma", "Dijon", 15_000),
        ];
        Datastore { sales, customers }
    }

    /// The sales person with `user_id`.
    pub fn sales_person(&self, user_id: u32) -> Option<&SalesPerson> {
        self.sales.iter().find(|s| s.user_id == user_id)
    }

    /// Every sales person.
    pub fn sales_people(&self) -> &[SalesPerson] {
        &self.sales
    }

    /// The three customers of `user_id` with the largest total purchase, largest first
    /// (`$sales.customers.orderBy("totalPurchase desc").slice(0; 3)`).
    pub fn top3(&self, user_id: u32) -> Vec<Customer> {
        let mut mine: Vec<&Customer> = self
            .customers
            .iter()
            .filter(|(owner, _)| *owner == user_id)
            .map(|(_, c)| c)
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.total_purchase));
        mine.into_iter().take(3).cloned().collect()
    }

    /// Checks a login: the sales person if `password` matches their hash. Slow on
    /// purpose (Argon2): call it off the async threads.
    pub fn check_login(&self, user_id: Option<u32>, password: &str) -> Option<&SalesPerson> {
        let person = user_id.and_then(|id| self.sales_person(id));
        let hash = person.map_or(DUMMY_HASH, |p| p.password_hash);
        let ok = verify_password(password, hash);
        person.filter(|_| ok)
    }
}

thread_local! {
    /// The working memory of an Argon2 check (~19 MiB with the default parameters),
    /// allocated once per hashing thread and reused: the allocator never sees a hash's
    /// memory come and go, so a storm of sign-ins leaves nothing resident behind it
    /// (glibc kept 350 MiB after one when each check allocated its own).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` matches the PHC-format Argon2 `hash`, compared in constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(h.algorithm),
        Params::try_from(&h),
        h.salt,
        h.hash,
    ) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let hashed = BLOCKS.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .is_ok()
    });
    // Output's equality is constant-time.
    hashed && Output::new(&out).is_ok_and(|o| o == expected)
}

/// An Argon2id hash of `password` in PHC format, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no OS randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top3_is_by_total_purchase_descending() {
        let d = Datastore::demo();
        let names: Vec<String> = d.top3(1).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["Cobalt Systems", "Acme Industries", "Blue Ocean Travel"]
        );
        assert_eq!(d.top3(2).len(), 3);
        assert!(d.top3(99).is_empty());
    }

    #[test]
    fn demo_passwords_match_their_hashes_and_nothing_else() {
        let d = Datastore::demo();
        for login in DEMO_LOGINS {
            let p = d.check_login(Some(login.user_id), login.password);
            assert_eq!(p.map(|p| p.user_id), Some(login.user_id));
        }
        assert!(d.check_login(Some(1), "bruno-demo-pass").is_none());
        assert!(d.check_login(Some(42), "ann-demo-pass").is_none());
        assert!(d.check_login(None, "").is_none());
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("nope", &h));
    }
}
