//! Surfaces, effects and answers (`interface ui`), as the host stores and
//! serves them.
//!
//! Plain serde types with a stable JSON shape (`{"type": "text", ...}`) for
//! the HTTP API and the task store; `wit/ui.rs` converts the WIT types into
//! them and checks their sizes, once, for every surface a module hands over.

use serde::{Deserialize, Serialize};

use crate::text::{MAX_QUOTED_ID_BYTES, truncate};

/// Most components in one surface.
pub const MAX_COMPONENTS: usize = 256;
/// Most effects one action may return.
pub const MAX_EFFECTS: usize = 32;
/// Largest surface, counted as the bytes of all its text plus
/// [`ELEMENT_COST`] per element: enough for a long confirmation, too small to
/// use the host as storage.
pub const MAX_SURFACE_BYTES: usize = 64 * 1024;
/// What each component, pair, option or button costs on top of its text, so
/// millions of empty elements cannot pass as a small surface.
pub const ELEMENT_COST: usize = 16;
/// Largest `data` an action may return: parsed on the host, so bounded first.
pub const MAX_ACTION_DATA_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ButtonStyle {
    Primary,
    Secondary,
    Danger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub id: String,
    pub label: String,
    pub style: ButtonStyle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// One component of a surface. See `wit/ui.wit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Component {
    Text {
        text: String,
    },
    Markdown {
        markdown: String,
    },
    KeyValue {
        pairs: Vec<(String, String)>,
    },
    Choices {
        name: String,
        options: Vec<Choice>,
        multiple: bool,
    },
    Buttons {
        buttons: Vec<Button>,
    },
    TaskCard {
        task_id: String,
    },
    Divider,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    pub title: String,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToastLevel {
    Info,
    Success,
    Warning,
    Error,
}

/// What an action asks the host to do with the user's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Effect {
    Toast { level: ToastLevel, message: String },
    Render { surface: Surface },
    ShowTask { task_id: String },
}

/// What an action returned, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutput {
    /// The module's JSON data, parsed.
    pub data: Option<serde_json::Value>,
    pub effects: Vec<Effect>,
}

/// Why a module's UI value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UiError {
    #[error("surface has {0} components; the limit is {MAX_COMPONENTS}")]
    TooManyComponents(usize),
    #[error("surface text is {0} bytes; the limit is {MAX_SURFACE_BYTES}")]
    SurfaceTooLarge(usize),
    #[error("action returned {0} effects; the limit is {MAX_EFFECTS}")]
    TooManyEffects(usize),
    #[error("action data is not JSON: {0}")]
    DataNotJson(String),
    #[error("action data is {0} bytes; the limit is {MAX_ACTION_DATA_BYTES}")]
    DataTooLarge(usize),
    #[error("{0:?} is not a task id")]
    BadTaskId(String),
}

impl Surface {
    /// The ids of every button the surface shows: what an answer may press.
    pub fn button_ids(&self) -> Vec<&str> {
        self.components
            .iter()
            .filter_map(|c| match c {
                Component::Buttons { buttons } => Some(buttons.iter().map(|b| b.id.as_str())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Bytes of all text in the surface plus [`ELEMENT_COST`] per element.
    pub fn text_bytes(&self) -> usize {
        let e = ELEMENT_COST;
        let component = |c: &Component| -> usize {
            e + match c {
                Component::Text { text } => text.len(),
                Component::Markdown { markdown } => markdown.len(),
                Component::KeyValue { pairs } => {
                    pairs.iter().map(|(k, v)| e + k.len() + v.len()).sum()
                }
                Component::Choices { name, options, .. } => {
                    name.len()
                        + options
                            .iter()
                            .map(|o| e + o.id.len() + o.label.len())
                            .sum::<usize>()
                }
                Component::Buttons { buttons } => {
                    buttons.iter().map(|b| e + b.id.len() + b.label.len()).sum()
                }
                Component::TaskCard { task_id } => task_id.len(),
                Component::Divider => 0,
            }
        };
        self.title.len() + self.components.iter().map(component).sum::<usize>()
    }
}

pub(crate) fn check_task_id(id: &str) -> Result<(), UiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| UiError::BadTaskId(truncate(id, MAX_QUOTED_ID_BYTES).to_owned()))
}
