//! A valid component that does not target the `modhost:sdk/module` world, so
//! `modhost check` must reject it.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export ping: func() -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn ping() -> u32 {
        42
    }
}

export!(Other);
