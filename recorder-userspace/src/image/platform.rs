//! Platforms, for choosing a manifest out of an image index.

use oci_spec::image::{Arch, Os};

use super::error::ImageError;

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GOOS-style operating system, e.g. `linux`.
    pub os: String,
    /// GOARCH-style architecture, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8`; `None` matches any.
    pub variant: Option<String>,
}

impl Platform {
    /// The machine this runs on, in Go's names.
    pub fn host() -> Self {
        Platform {
            os: Os::default().to_string(),
            architecture: Arch::default().to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(ImageError::BadPlatform(s.to_owned())),
        }
    }

    /// Whether a descriptor's platform satisfies this one.
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) | (None, _) => self.variant.is_none(),
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Checks that `image`, however it was chosen, is built for this platform: a layout or
    /// store holding a single manifest is taken whatever its platform, and an explicit
    /// `--platform` must not be ignored silently.
    pub fn check_image(&self, image: &super::Image) -> Result<(), ImageError> {
        let config = image.config();
        let os = config.os().to_string();
        let arch = config.architecture().to_string();
        let variant = config.variant().clone();
        let fits = os == self.os
            && arch == self.architecture
            && match (&self.variant, &variant) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            };
        if fits {
            return Ok(());
        }
        Err(ImageError::PlatformMismatch {
            digest: image.manifest_digest().to_string(),
            platform: self.to_string(),
            available: match variant {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            },
        })
    }
}

/// `os/arch[/variant]` of a descriptor's platform, for messages.
pub fn describe(p: &oci_spec::image::Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}
