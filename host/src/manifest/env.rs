//! [`LoadEnv`]: what a manifest's program grants are resolved against on
//! this host.

use std::path::PathBuf;

/// What a manifest is checked against on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadEnv {
    /// Directories searched, in order, for a bare program name. Relative
    /// entries are ignored.
    pub search_path: Vec<PathBuf>,
    /// Directories a module can write (module and data directories). A
    /// program that resolves inside one is refused.
    pub sandbox_roots: Vec<PathBuf>,
}

impl LoadEnv {
    /// `/usr/local/bin:/usr/bin:/bin`, with no sandbox roots.
    pub fn host_default() -> Self {
        Self {
            search_path: ["/usr/local/bin", "/usr/bin", "/bin"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            sandbox_roots: Vec::new(),
        }
    }

    /// The search path as a `PATH` value for a child: its absolute entries
    /// (the only ones a bare program name is looked up in).
    pub fn path_var(&self) -> String {
        self.search_path
            .iter()
            .filter(|p| p.is_absolute())
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The search path as shown in an error.
    pub fn search_path_display(&self) -> String {
        self.search_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl Default for LoadEnv {
    fn default() -> Self {
        Self::host_default()
    }
}
