//! Closed sets of names that become metric labels and API strings: one macro declares the enum, its
//! label for each variant and the list of every variant together, so adding a variant is one line the
//! compiler carries everywhere else (`ALL` cannot miss it, `as_str` cannot forget it).

/// Declares a `Copy` enum whose variants each carry a `snake_case` label:
///
/// ```ignore
/// labelled! {
///     /// What a fault does.
///     pub enum FaultType {
///         /// Caps bytes per second.
///         Bandwidth => "bandwidth",
///     }
/// }
/// ```
///
/// gives `FaultType::ALL` (in declaration order), `as_str()` and `from_label()`; the enum serializes as
/// its label.
#[macro_export]
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident => $label:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The label: metric label value and API string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }

            /// The variant whose label is `label`.
            pub fn from_label(label: &str) -> Option<Self> {
                match label {
                    $($label => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    labelled! {
        /// A test set.
        enum Colour {
            /// Red.
            Red => "red",
            /// Dark blue.
            DarkBlue => "dark_blue",
        }
    }

    #[test]
    fn every_variant_is_listed_labelled_and_found_by_its_label() {
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
        for c in Colour::ALL {
            assert_eq!(Colour::from_label(c.as_str()), Some(*c));
        }
        assert_eq!(Colour::from_label("green"), None);
        assert_eq!(serde_json::to_string(&Colour::DarkBlue).ok().as_deref(), Some("\"dark_blue\""));
    }
}
