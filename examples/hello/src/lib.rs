//! The smallest useful module: one action that greets the caller by the
//! identity the host gave it.

use module_sdk::log::{self, Level};
use module_sdk::prelude::*;

module_sdk::module! {
    actions: {
        "greet" => greet: "Say hello to the caller",
    },
}

#[derive(Serialize)]
struct Greeting {
    message: String,
    module: String,
    request_id: String,
}

fn greet() -> Result<ActionResult> {
    let me = context::current();
    log::write(
        Level::Info,
        "greeting the caller",
        &[("greeted", &me.user_id)],
    );
    let message = format!("Hello, {} of {}!", me.user_id, me.organization_id);
    let greeting = Greeting {
        message: message.clone(),
        module: me.module,
        request_id: me.request_id,
    };
    Ok(ActionResult::data(&greeting)?.toast(ToastLevel::Success, message))
}
