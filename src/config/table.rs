//! The macro that turns one table of settings into a config struct: each row declares a
//! field once — its doc, type, default, JSON key (a path such as `ShutdownTimeouts.JoinMs`),
//! the [`Kind`](crate::config::values::Kind) that gives its range, unit and whether it is a
//! secret, Hydrogen's older names (`alias`, read first so that the row's own key wins) and
//! finer-grained test keys (`overridden_by`, read last so that they win) — and
//! the struct, its `Default`, its reader and its redacted view all come from that row.
#![forbid(unsafe_code)]

/// `settings_table! { struct Name { /// doc  field: Type = default, [alias "A" => kind,]* "Key" => kind [, overridden_by "K" => kind]*; ... } }`
macro_rules! settings_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$doc:meta])*
                $field:ident : $ty:ty = $default:expr,
                $( alias $alias:literal => $akind:expr, )*
                $key:literal => $kind:expr
                $( , overridden_by $over:literal => $okind:expr )*;
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Reads every row of the table from `section` (aliases first, then the key).
            pub(super) fn read_rows(
                &mut self,
                section: &mut $crate::config::reader::Section,
                report: &mut $crate::config::reader::LoadReport,
            ) -> Result<(), $crate::error::Error> {
                use $crate::config::values::SettingValue;
                $(
                    $(
                        if let Some(given) = section.take_path($alias)? {
                            self.$field = SettingValue::parse(given, &$akind, report)?;
                        }
                    )*
                    if let Some(given) = section.take_path($key)? {
                        self.$field = SettingValue::parse(given, &$kind, report)?;
                    }
                    $(
                        if let Some(given) = section.take_path($over)? {
                            self.$field = SettingValue::parse(given, &$okind, report)?;
                        }
                    )*
                )*
                Ok(())
            }

            /// Every row's value under its key (secrets redacted by their kind).
            pub(super) fn show_rows(&self) -> serde_json::Map<String, serde_json::Value> {
                use $crate::config::values::SettingValue;
                let mut out = serde_json::Map::new();
                $( $crate::config::values::put_path(&mut out, $key, self.$field.show(&$kind)); )*
                out
            }
        }
    };
}

pub(crate) use settings_table;
