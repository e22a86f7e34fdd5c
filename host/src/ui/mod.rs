//! `interface ui`: surfaces, effects and answers, as the host stores and
//! serves them.
//!
//! The WIT types become plain serde types with a stable JSON shape
//! (`{"type": "text", ...}`) for the HTTP API and the task store. Sizes are
//! checked here, once, for every surface a module hands over.

use serde::{Deserialize, Serialize};

use crate::bindings::ui as wit;

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
    /// Converts and checks a surface from a guest.
    pub fn from_wit(s: wit::Surface) -> Result<Self, UiError> {
        if s.components.len() > MAX_COMPONENTS {
            return Err(UiError::TooManyComponents(s.components.len()));
        }
        let surface = Surface {
            title: s.title,
            components: s.components.into_iter().map(Component::from).collect(),
        };
        for c in &surface.components {
            if let Component::TaskCard { task_id } = c {
                check_task_id(task_id)?;
            }
        }
        let size = surface.text_bytes();
        if size > MAX_SURFACE_BYTES {
            return Err(UiError::SurfaceTooLarge(size));
        }
        Ok(surface)
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

impl Surface {
    /// The surface as the WIT record, for the read model.
    pub fn to_wit(&self) -> wit::Surface {
        wit::Surface {
            title: self.title.clone(),
            components: self
                .components
                .iter()
                .map(|c| match c {
                    Component::Text { text } => wit::Component::Text(text.clone()),
                    Component::Markdown { markdown } => wit::Component::Markdown(markdown.clone()),
                    Component::KeyValue { pairs } => wit::Component::KeyValue(pairs.clone()),
                    Component::Choices {
                        name,
                        options,
                        multiple,
                    } => wit::Component::Choices(wit::Choices {
                        name: name.clone(),
                        options: options
                            .iter()
                            .map(|o| wit::Choice {
                                id: o.id.clone(),
                                label: o.label.clone(),
                            })
                            .collect(),
                        multiple: *multiple,
                    }),
                    Component::Buttons { buttons } => wit::Component::Buttons(
                        buttons
                            .iter()
                            .map(|b| wit::Button {
                                id: b.id.clone(),
                                label: b.label.clone(),
                                style: match b.style {
                                    ButtonStyle::Primary => wit::ButtonStyle::Primary,
                                    ButtonStyle::Secondary => wit::ButtonStyle::Secondary,
                                    ButtonStyle::Danger => wit::ButtonStyle::Danger,
                                },
                            })
                            .collect(),
                    ),
                    Component::TaskCard { task_id } => wit::Component::TaskCard(task_id.clone()),
                    Component::Divider => wit::Component::Divider,
                })
                .collect(),
        }
    }
}

impl From<wit::Component> for Component {
    fn from(c: wit::Component) -> Self {
        match c {
            wit::Component::Text(text) => Component::Text { text },
            wit::Component::Markdown(markdown) => Component::Markdown { markdown },
            wit::Component::KeyValue(pairs) => Component::KeyValue { pairs },
            wit::Component::Choices(c) => Component::Choices {
                name: c.name,
                options: c
                    .options
                    .into_iter()
                    .map(|o| Choice {
                        id: o.id,
                        label: o.label,
                    })
                    .collect(),
                multiple: c.multiple,
            },
            wit::Component::Buttons(b) => Component::Buttons {
                buttons: b
                    .into_iter()
                    .map(|b| Button {
                        id: b.id,
                        label: b.label,
                        style: match b.style {
                            wit::ButtonStyle::Primary => ButtonStyle::Primary,
                            wit::ButtonStyle::Secondary => ButtonStyle::Secondary,
                            wit::ButtonStyle::Danger => ButtonStyle::Danger,
                        },
                    })
                    .collect(),
            },
            wit::Component::TaskCard(task_id) => Component::TaskCard { task_id },
            wit::Component::Divider => Component::Divider,
        }
    }
}

impl ActionOutput {
    /// Converts and checks what `handle-action` returned.
    pub fn from_wit(r: wit::ActionResult) -> Result<Self, UiError> {
        if r.effects.len() > MAX_EFFECTS {
            return Err(UiError::TooManyEffects(r.effects.len()));
        }
        if let Some(text) = &r.data
            && text.len() > MAX_ACTION_DATA_BYTES
        {
            return Err(UiError::DataTooLarge(text.len()));
        }
        let data = match r.data {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| UiError::DataNotJson(e.to_string()))?)
            }
            None => None,
        };
        let mut effects = Vec::with_capacity(r.effects.len());
        for e in r.effects {
            effects.push(match e {
                wit::Effect::Toast((level, message)) => Effect::Toast {
                    level: match level {
                        wit::ToastLevel::Info => ToastLevel::Info,
                        wit::ToastLevel::Success => ToastLevel::Success,
                        wit::ToastLevel::Warning => ToastLevel::Warning,
                        wit::ToastLevel::Error => ToastLevel::Error,
                    },
                    message: crate::log::truncate(&message, 1024).to_owned(),
                },
                wit::Effect::Render(s) => Effect::Render {
                    surface: Surface::from_wit(s)?,
                },
                wit::Effect::ShowTask(task_id) => {
                    check_task_id(&task_id)?;
                    Effect::ShowTask { task_id }
                }
            });
        }
        Ok(ActionOutput { data, effects })
    }
}

fn check_task_id(id: &str) -> Result<(), UiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| UiError::BadTaskId(crate::log::truncate(id, 64).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_elements_still_count_against_the_surface_cap() {
        let buttons = (0..MAX_SURFACE_BYTES / ELEMENT_COST)
            .map(|_| wit::Button {
                id: String::new(),
                label: String::new(),
                style: wit::ButtonStyle::Primary,
            })
            .collect();
        let s = wit::Surface {
            title: String::new(),
            components: vec![wit::Component::Buttons(buttons)],
        };
        assert!(matches!(
            Surface::from_wit(s),
            Err(UiError::SurfaceTooLarge(_))
        ));
    }

    #[test]
    fn oversize_action_data_is_refused_before_parsing() {
        let r = wit::ActionResult {
            data: Some("[".repeat(MAX_ACTION_DATA_BYTES + 1)),
            effects: vec![],
        };
        assert!(matches!(
            ActionOutput::from_wit(r),
            Err(UiError::DataTooLarge(_))
        ));
        let r = wit::ActionResult {
            data: None,
            effects: vec![wit::Effect::ShowTask("x".into())],
        };
        assert!(matches!(
            ActionOutput::from_wit(r),
            Err(UiError::BadTaskId(_))
        ));
    }

    #[test]
    fn components_serialize_with_a_type_tag() {
        let c = Component::Text { text: "hi".into() };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"text","text":"hi"}"#
        );
        assert_eq!(
            serde_json::to_string(&Component::Divider).unwrap(),
            r#"{"type":"divider"}"#
        );
    }

    #[test]
    fn oversize_surface_is_refused() {
        let s = wit::Surface {
            title: "t".into(),
            components: vec![wit::Component::Text("x".repeat(MAX_SURFACE_BYTES))],
        };
        assert!(matches!(
            Surface::from_wit(s),
            Err(UiError::SurfaceTooLarge(_))
        ));
    }

    #[test]
    fn action_data_must_be_json() {
        let r = wit::ActionResult {
            data: Some("{nope".into()),
            effects: vec![],
        };
        assert!(matches!(
            ActionOutput::from_wit(r),
            Err(UiError::DataNotJson(_))
        ));
    }
}
