//! What a user sees: confirmation surfaces, task cards and the effects an
//! action returns. Mirrors the WIT `ui` interface (`wit/ui.wit`); the host
//! validates sizes and renders everything as data, never as markup.

use serde::Serialize;

use crate::__bindings::modhost::sdk::ui as wit;
use crate::{Result, TaskId, Timestamp};

/// How a button is presented (WIT `button-style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    Primary,
    Secondary,
    Danger,
}

/// A button; an [`Answer`] carries the `id` of the one pressed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Button {
    pub id: String,
    pub label: String,
    pub style: Style,
}

/// One option of [`Choices`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
}

/// Options to pick from; the picked ids come back under `name`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Choices {
    pub name: String,
    pub options: Vec<Choice>,
    pub multiple: bool,
}

/// One component of a [`Surface`] (WIT `component`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Text(String),
    /// Rendered without raw HTML.
    Markdown(String),
    KeyValue(Vec<(String, String)>),
    Choices(Choices),
    /// A row of buttons.
    Buttons(Vec<Button>),
    /// A live card of a task the caller may see.
    TaskCard(TaskId),
    Divider,
}

/// A titled list of components (WIT `surface`). Build one with [`Builder`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Surface {
    pub title: String,
    pub components: Vec<Component>,
}

/// Builds a [`Surface`] component by component.
///
/// ```
/// use module_sdk::ui::{Builder, Style};
/// let surface = Builder::new("Delete 3 files?")
///     .text("They cannot be restored.")
///     .key_value([("folder", "reports")])
///     .button("yes", "Delete", Style::Danger)
///     .button("no", "Keep", Style::Secondary)
///     .build();
/// assert_eq!(surface.components.len(), 3); // consecutive buttons share a row
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    surface: Surface,
}

impl Builder {
    pub fn new(title: impl Into<String>) -> Self {
        Builder {
            surface: Surface {
                title: title.into(),
                components: Vec::new(),
            },
        }
    }

    /// Appends any component.
    pub fn component(mut self, component: Component) -> Self {
        self.surface.components.push(component);
        self
    }

    pub fn text(self, text: impl Into<String>) -> Self {
        self.component(Component::Text(text.into()))
    }

    pub fn markdown(self, markdown: impl Into<String>) -> Self {
        self.component(Component::Markdown(markdown.into()))
    }

    /// A table of label/value pairs.
    pub fn key_value<K: Into<String>, V: Into<String>>(
        self,
        rows: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let rows = rows
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.component(Component::KeyValue(rows))
    }

    /// Options given as `(id, label)`; the answer lists picked ids under `name`.
    pub fn choices<I: Into<String>, L: Into<String>>(
        self,
        name: impl Into<String>,
        options: impl IntoIterator<Item = (I, L)>,
        multiple: bool,
    ) -> Self {
        let options = options
            .into_iter()
            .map(|(id, label)| Choice {
                id: id.into(),
                label: label.into(),
            })
            .collect();
        self.component(Component::Choices(Choices {
            name: name.into(),
            options,
            multiple,
        }))
    }

    /// A button; consecutive buttons go into one row.
    pub fn button(mut self, id: impl Into<String>, label: impl Into<String>, style: Style) -> Self {
        let button = Button {
            id: id.into(),
            label: label.into(),
            style,
        };
        if let Some(Component::Buttons(row)) = self.surface.components.last_mut() {
            row.push(button);
            self
        } else {
            self.component(Component::Buttons(vec![button]))
        }
    }

    pub fn task_card(self, task: &TaskId) -> Self {
        self.component(Component::TaskCard(task.clone()))
    }

    pub fn divider(self) -> Self {
        self.component(Component::Divider)
    }

    pub fn build(self) -> Surface {
        self.surface
    }
}

/// How serious a toast is (WIT `toast-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToastLevel {
    Info,
    Success,
    Warning,
    Error,
}

/// What an action asks the host to do with the user's page (WIT `effect`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Toast(ToastLevel, String),
    Render(Surface),
    ShowTask(TaskId),
}

/// What an action returns: JSON data for the caller plus [`Effect`]s.
///
/// ```
/// # fn main() -> module_sdk::Result<()> {
/// use module_sdk::ui::{ActionResult, ToastLevel};
/// let r = ActionResult::data(&serde_json::json!({"count": 3}))?
///     .toast(ToastLevel::Success, "counted");
/// assert_eq!(r.data_json(), Some(r#"{"count":3}"#));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionResult {
    data: Option<String>,
    effects: Vec<Effect>,
}

impl ActionResult {
    /// No data, no effects.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A result whose data is `value` as JSON.
    pub fn data<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(ActionResult {
            data: Some(serde_json::to_string(value)?),
            effects: Vec::new(),
        })
    }

    /// Adds a toast.
    pub fn toast(self, level: ToastLevel, message: impl Into<String>) -> Self {
        self.effect(Effect::Toast(level, message.into()))
    }

    /// Asks the host to show `surface`.
    pub fn render(self, surface: Surface) -> Self {
        self.effect(Effect::Render(surface))
    }

    /// Asks the host to show the card of `task`.
    pub fn show_task(self, task: TaskId) -> Self {
        self.effect(Effect::ShowTask(task))
    }

    pub fn effect(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    /// The data, as JSON text.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_deref()
    }

    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    pub(crate) fn into_wit(self) -> wit::ActionResult {
        wit::ActionResult {
            data: self.data,
            effects: self.effects.into_iter().map(effect_to_wit).collect(),
        }
    }
}

/// An action that returns nothing returns an empty result.
impl From<()> for ActionResult {
    fn from((): ()) -> Self {
        ActionResult::empty()
    }
}

/// The user's answer to a confirmation (WIT `answer`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The id of the button pressed.
    pub button: String,
    /// Picked choices: `{ "<choices name>": ["<choice id>", ...] }`.
    pub values: serde_json::Value,
    /// The user who answered.
    pub answered_by: String,
    pub answered_at: Timestamp,
}

impl Answer {
    /// The ids picked in the [`Choices`] called `name` (empty if none).
    pub fn picked(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .and_then(serde_json::Value::as_array)
            .map(|ids| ids.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default()
    }

    pub(crate) fn from_wit(a: wit::Answer) -> Self {
        Answer {
            button: a.button,
            values: serde_json::from_str(&a.values).unwrap_or(serde_json::Value::Null),
            answered_by: a.answered_by,
            answered_at: Timestamp::from_millis(a.answered_at),
        }
    }
}

fn effect_to_wit(effect: Effect) -> wit::Effect {
    match effect {
        Effect::Toast(level, message) => {
            let level = match level {
                ToastLevel::Info => wit::ToastLevel::Info,
                ToastLevel::Success => wit::ToastLevel::Success,
                ToastLevel::Warning => wit::ToastLevel::Warning,
                ToastLevel::Error => wit::ToastLevel::Error,
            };
            wit::Effect::Toast((level, message))
        }
        Effect::Render(surface) => wit::Effect::Render(surface.into_wit()),
        Effect::ShowTask(task) => wit::Effect::ShowTask(task.into_string()),
    }
}

impl Surface {
    pub(crate) fn into_wit(self) -> wit::Surface {
        let components = self.components.into_iter().map(component_to_wit).collect();
        wit::Surface {
            title: self.title,
            components,
        }
    }

    pub(crate) fn from_wit(s: wit::Surface) -> Self {
        let components = s.components.into_iter().map(component_from_wit).collect();
        Surface {
            title: s.title,
            components,
        }
    }
}

fn component_to_wit(c: Component) -> wit::Component {
    match c {
        Component::Text(s) => wit::Component::Text(s),
        Component::Markdown(s) => wit::Component::Markdown(s),
        Component::KeyValue(rows) => wit::Component::KeyValue(rows),
        Component::Choices(c) => wit::Component::Choices(wit::Choices {
            name: c.name,
            options: c
                .options
                .into_iter()
                .map(|o| wit::Choice {
                    id: o.id,
                    label: o.label,
                })
                .collect(),
            multiple: c.multiple,
        }),
        Component::Buttons(row) => wit::Component::Buttons(
            row.into_iter()
                .map(|b| wit::Button {
                    id: b.id,
                    label: b.label,
                    style: match b.style {
                        Style::Primary => wit::ButtonStyle::Primary,
                        Style::Secondary => wit::ButtonStyle::Secondary,
                        Style::Danger => wit::ButtonStyle::Danger,
                    },
                })
                .collect(),
        ),
        Component::TaskCard(id) => wit::Component::TaskCard(id.into_string()),
        Component::Divider => wit::Component::Divider,
    }
}

fn component_from_wit(c: wit::Component) -> Component {
    match c {
        wit::Component::Text(s) => Component::Text(s),
        wit::Component::Markdown(s) => Component::Markdown(s),
        wit::Component::KeyValue(rows) => Component::KeyValue(rows),
        wit::Component::Choices(c) => Component::Choices(Choices {
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
        }),
        wit::Component::Buttons(row) => Component::Buttons(
            row.into_iter()
                .map(|b| Button {
                    id: b.id,
                    label: b.label,
                    style: match b.style {
                        wit::ButtonStyle::Primary => Style::Primary,
                        wit::ButtonStyle::Secondary => Style::Secondary,
                        wit::ButtonStyle::Danger => Style::Danger,
                    },
                })
                .collect(),
        ),
        wit::Component::TaskCard(id) => Component::TaskCard(TaskId::from(id)),
        wit::Component::Divider => Component::Divider,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_component_order_and_rows_buttons() {
        let s = Builder::new("t")
            .button("a", "A", Style::Primary)
            .divider()
            .button("b", "B", Style::Danger)
            .button("c", "C", Style::Secondary)
            .build();
        assert_eq!(s.components.len(), 3);
        assert!(matches!(&s.components[2], Component::Buttons(row) if row.len() == 2));
    }

    #[test]
    fn surface_round_trips_through_wit() {
        let s = Builder::new("Pick")
            .markdown("**x**")
            .choices("which", [("a", "A"), ("b", "B")], true)
            .task_card(&TaskId::new("t1"))
            .build();
        assert_eq!(Surface::from_wit(s.clone().into_wit()), s);
    }

    #[test]
    fn answer_lists_picked_ids() {
        let a = Answer::from_wit(wit::Answer {
            button: "ok".into(),
            values: r#"{"which":["a","b"]}"#.into(),
            answered_by: "u".into(),
            answered_at: 1,
        });
        assert_eq!(a.picked("which"), ["a", "b"]);
        assert!(a.picked("other").is_empty());
    }
}
