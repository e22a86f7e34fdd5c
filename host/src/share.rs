//! [`Shares`]: a host-wide resource (blocking threads, instances, children)
//! counted per module, so one module cannot hold more than its share of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Units of one resource in use, in all and per owner.
#[derive(Debug)]
pub struct Shares {
    total: u32,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_owner: HashMap<String, u32>,
}

/// Why a unit was not handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The owner holds its share already.
    Owner,
    /// Every unit is in use.
    Total,
}

impl Shares {
    /// `total` units (at least one) over all owners.
    pub fn new(total: u32) -> Arc<Self> {
        Arc::new(Shares {
            total: total.max(1),
            state: Mutex::default(),
        })
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// One unit for `owner`, who may hold at most `per_owner` at once;
    /// given back when the [`Share`] drops.
    pub fn take(self: &Arc<Self>, owner: &str, per_owner: u32) -> Result<Share, Refused> {
        let mut c = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if c.by_owner.get(owner).copied().unwrap_or(0) >= per_owner {
            return Err(Refused::Owner);
        }
        if c.total >= self.total {
            return Err(Refused::Total);
        }
        c.total += 1;
        *c.by_owner.entry(owner.to_owned()).or_default() += 1;
        Ok(Share {
            shares: self.clone(),
            owner: owner.to_owned(),
        })
    }
}

/// One unit of a [`Shares`], held until dropped.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    owner: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut c = self.shares.state.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_owner.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_owner.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_gets_no_more_than_its_share_and_units_come_back_on_drop() {
        let shares = Shares::new(3);
        let a1 = shares.take("a", 2).unwrap();
        let _a2 = shares.take("a", 2).unwrap();
        assert_eq!(shares.take("a", 2).unwrap_err(), Refused::Owner);
        let _b1 = shares.take("b", 2).unwrap();
        assert_eq!(shares.take("b", 2).unwrap_err(), Refused::Total);
        drop(a1);
        assert!(shares.take("b", 2).is_ok());
    }
}
