//! The login policy's settings (`AULA_LOGIN_*`): thresholds, lockout duration and the
//! trust window of [`UserServices`], read from the environment and checked at start-up,
//! so that a zero or absurd value stops the process with a message naming the variable
//! instead of locking everyone out (or nobody) later.

use aula_domain::user::UserServices;
use chrono::Duration;

use super::ConfigError;

/// One setting: its variable, its unit and the range it takes.
struct Setting {
    name: &'static str,
    unit: &'static str,
    min: i64,
    max: i64,
}

const PER_SOURCE: Setting = Setting {
    name: "AULA_LOGIN_MAX_FAILURES_PER_SOURCE",
    unit: "failures",
    min: 1,
    max: 100,
};
const PER_ACCOUNT: Setting = Setting {
    name: "AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT",
    unit: "failures",
    min: 1,
    max: 100_000,
};
const LOCKOUT: Setting = Setting {
    name: "AULA_LOGIN_LOCKOUT_MINUTES",
    unit: "minutes",
    min: 1,
    max: 24 * 60,
};
const TRUST: Setting = Setting {
    name: "AULA_LOGIN_TRUSTED_SOURCE_DAYS",
    unit: "days",
    min: 1,
    max: 365,
};

impl Setting {
    fn refuse(&self, value: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{}: \"{value}\" is not a whole number of {} from {} to {}",
            self.name, self.unit, self.min, self.max
        ))
    }

    fn check(&self, value: i64) -> Result<(), ConfigError> {
        if (self.min..=self.max).contains(&value) {
            Ok(())
        } else {
            Err(self.refuse(value))
        }
    }

    /// A duration set in code: within the range, counted in `unit`s (not necessarily
    /// whole ones).
    fn check_duration(&self, value: Duration, unit: Duration) -> Result<(), ConfigError> {
        if value >= unit * self.min as i32 && value <= unit * self.max as i32 {
            Ok(())
        } else {
            Err(self.refuse(format!("{}s", value.num_seconds())))
        }
    }

    /// The value of the variable, `default` when it is unset or blank.
    fn read(
        &self,
        lookup: &impl Fn(&str) -> Option<String>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match lookup(self.name).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<i64>() {
                Ok(value) if (self.min..=self.max).contains(&value) => Ok(value),
                _ => Err(self.refuse(text)),
            },
        }
    }
}

/// The login policy from the environment (the product defaults for what is unset).
pub fn login_policy_from_env() -> Result<UserServices, ConfigError> {
    login_policy_from(|name| std::env::var(name).ok())
}

/// The login policy from `lookup` (a variable's value by name), over the defaults.
pub fn login_policy_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<UserServices, ConfigError> {
    let d = UserServices::default();
    let count = |n: u32| i64::from(n);
    let per_source = PER_SOURCE.read(&lookup, count(d.max_failed_logins))?;
    let per_account = PER_ACCOUNT.read(&lookup, count(d.max_failed_logins_per_account))?;
    let services = UserServices {
        // In range, so they fit.
        max_failed_logins: per_source as u32,
        max_failed_logins_per_account: per_account as u32,
        lockout: Duration::minutes(LOCKOUT.read(&lookup, d.lockout.num_minutes())?),
        trusted_source_window: Duration::days(
            TRUST.read(&lookup, d.trusted_source_window.num_days())?,
        ),
        ..d
    };
    check_login_policy(&services)?;
    Ok(services)
}

/// What the login policy must be, however it was built: each value in its range, and
/// the account's ceiling no lower than one source's threshold (else the whole account
/// locks before any one source would, and a stranger alone locks the owner out).
pub fn check_login_policy(services: &UserServices) -> Result<(), ConfigError> {
    PER_SOURCE.check(i64::from(services.max_failed_logins))?;
    PER_ACCOUNT.check(i64::from(services.max_failed_logins_per_account))?;
    LOCKOUT.check_duration(services.lockout, Duration::minutes(1))?;
    TRUST.check_duration(services.trusted_source_window, Duration::days(1))?;
    if services.max_failed_logins_per_account < services.max_failed_logins {
        return Err(ConfigError(format!(
            "{}: {} is below {} ({}): the whole account would lock before any one address",
            PER_ACCOUNT.name,
            services.max_failed_logins_per_account,
            PER_SOURCE.name,
            services.max_failed_logins
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn policy(vars: &[(&str, &str)]) -> Result<UserServices, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        login_policy_from(|name| vars.get(name).cloned())
    }

    #[test]
    fn unset_variables_give_the_product_defaults() {
        let services = policy(&[]).unwrap();
        let d = UserServices::default();
        assert_eq!(services.max_failed_logins, d.max_failed_logins);
        assert_eq!(
            services.max_failed_logins_per_account,
            d.max_failed_logins_per_account
        );
        assert_eq!(services.lockout, d.lockout);
        assert_eq!(services.trusted_source_window, d.trusted_source_window);
        assert!(check_login_policy(&d).is_ok());
    }

    #[test]
    fn every_setting_is_read() {
        let services = policy(&[
            ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "3"),
            ("AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT", " 30 "),
            ("AULA_LOGIN_LOCKOUT_MINUTES", "60"),
            ("AULA_LOGIN_TRUSTED_SOURCE_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(services.max_failed_logins, 3);
        assert_eq!(services.max_failed_logins_per_account, 30);
        assert_eq!(services.lockout, Duration::hours(1));
        assert_eq!(services.trusted_source_window, Duration::days(7));
    }

    #[test]
    fn zero_absurd_or_unparsable_values_are_refused_naming_the_variable() {
        for (name, value) in [
            ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "0"),
            ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "five"),
            ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "-5"),
            ("AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT", "0"),
            ("AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT", "99999999999"),
            ("AULA_LOGIN_LOCKOUT_MINUTES", "0"),
            ("AULA_LOGIN_LOCKOUT_MINUTES", "100000"),
            ("AULA_LOGIN_TRUSTED_SOURCE_DAYS", "0"),
            ("AULA_LOGIN_TRUSTED_SOURCE_DAYS", "3650"),
        ] {
            let error = policy(&[(name, value)]).unwrap_err().0;
            assert!(
                error.starts_with(name) && error.contains(value),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn the_ceiling_is_no_lower_than_one_addresses_threshold() {
        let error = policy(&[
            ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "10"),
            ("AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT", "5"),
        ])
        .unwrap_err()
        .0;
        assert!(
            error.contains("AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT") && error.contains("below"),
            "{error}"
        );
    }

    #[test]
    fn a_policy_built_in_code_is_checked_too() {
        let zero = UserServices {
            lockout: Duration::zero(),
            ..UserServices::default()
        };
        assert!(check_login_policy(&zero)
            .unwrap_err()
            .0
            .contains("AULA_LOGIN_LOCKOUT_MINUTES"));
        let no_trust = UserServices {
            trusted_source_window: Duration::seconds(1),
            ..UserServices::default()
        };
        assert!(check_login_policy(&no_trust).is_err());
        let no_threshold = UserServices {
            max_failed_logins: 0,
            ..UserServices::default()
        };
        assert!(check_login_policy(&no_threshold).is_err());
    }
}
