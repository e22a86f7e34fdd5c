//! `interface ui`: the WIT surfaces, effects and action results a module
//! hands over, converted into the host's [`crate::ui`] types and checked
//! against their caps once, here.

use super::bindings::{HostError, convert_error, types, ui as wit};
use crate::text::{MAX_SHOWN_TEXT_BYTES, truncate};
use crate::ui::{
    ActionOutput, Button, ButtonStyle, Choice, Component, Effect, MAX_ACTION_DATA_BYTES,
    MAX_COMPONENTS, MAX_EFFECTS, MAX_SURFACE_BYTES, Surface, ToastLevel, UiError, check_task_id,
};

/// `ui` and `types` have no functions; their types are what crosses.
pub struct UiView;

impl wit::Host for UiView {}

impl types::Host for UiView {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<types::Error> {
        convert_error(err)
    }
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
                    message: truncate(&message, MAX_SHOWN_TEXT_BYTES).to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::ELEMENT_COST;

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
