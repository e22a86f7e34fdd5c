//! An obelisk activity that returns at once: the peer's side of the
//! durable no-op task scenario.

wit_bindgen::generate!({ world: "activity", path: "wit" });

struct Noop;

impl exports::bench::noop::noop::Guest for Noop {
    fn noop() -> Result<(), ()> {
        Ok(())
    }
}

export!(Noop);
