use std::fmt;

use chrono::NaiveDate;
use uuid::Uuid;

use super::*;
use crate::errors::RejectionKind;
use ValidationReason::*;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
}

fn reason<T: fmt::Debug>(result: Result<T, ValidationError>) -> ValidationReason {
    result.expect_err("expected a validation error").reason
}

// --- ids ---

#[test]
fn id_parses_and_displays_round_trip() {
    let uuid = Uuid::from_u128(0x1234);
    let id: StudentId = uuid.to_string().parse().unwrap();
    assert_eq!(id, StudentId::from_uuid(uuid));
    assert_eq!(id.to_string(), uuid.to_string());
    assert_eq!(Uuid::from(id), uuid);
}

#[test]
fn id_rejects_malformed_input() {
    let err = "not-a-uuid".parse::<CourseId>().unwrap_err();
    assert_eq!(err, ValidationError::new("id", InvalidFormat));
}

#[test]
fn id_serializes_as_plain_uuid_string() {
    let id = UserId::from_uuid(Uuid::from_u128(1));
    assert_eq!(
        serde_json::to_value(id).unwrap(),
        serde_json::json!("00000000-0000-0000-0000-000000000001")
    );
}

// --- text names ---

#[test]
fn person_name_is_trimmed_and_accepts_200_unicode_chars() {
    let name = PersonName::parse("  Ada Lovelace \n").unwrap();
    assert_eq!(name.as_str(), "Ada Lovelace");
    let name = "é".repeat(200);
    assert_eq!(PersonName::parse(&name).unwrap().as_str(), name);
}

#[test]
fn person_name_rejects_empty_and_blank() {
    assert_eq!(reason(PersonName::parse("")), Empty);
    assert_eq!(reason(PersonName::parse("   \t")), Empty);
}

#[test]
fn person_name_rejects_too_long() {
    assert_eq!(
        reason(PersonName::parse(&"a".repeat(201))),
        TooLong { max: 200 }
    );
}

#[test]
fn person_name_rejects_control_characters() {
    let err = PersonName::parse("Ada\u{0}Lovelace").unwrap_err();
    assert_eq!(err.field, "name");
    assert_eq!(err.reason, ControlCharacters);
}

#[test]
fn names_that_only_look_alike_are_refused_or_made_one() {
    // Zero-width, soft hyphen, BOM and bidirectional overrides show nothing, or
    // reorder what is shown: "Mid\u{200B}term" looks like "Midterm".
    for spoof in [
        "Mid\u{200B}term",
        "Mid\u{00AD}term",
        "\u{FEFF}Midterm",
        "Midterm\u{202E}",
        "Mid\u{2066}term\u{2069}",
    ] {
        assert_eq!(
            reason(ExamName::parse(spoof)),
            InvisibleCharacters,
            "{spoof:?}"
        );
    }
    assert_eq!(InvisibleCharacters.code(), "INVISIBLE_CHARACTERS");
    // Runs of spaces (and other non-control whitespace) inside are one space.
    assert_eq!(
        PersonName::parse("  Ana \u{00A0}  Lima ").unwrap(),
        PersonName::parse("Ana Lima").unwrap()
    );
    // A newline or tab is still a control character, not a space.
    assert_eq!(reason(PersonName::parse("Ana\nLima")), ControlCharacters);
    // Names recorded before these rules still load from stored events.
    let stored: ExamName = serde_json::from_str(r#""Mid\u200bterm  exam""#).unwrap();
    assert_eq!(stored.as_str(), "Mid\u{200B}term  exam");
}

#[test]
fn blank_looking_mixed_script_and_unnormalized_names() {
    // Made only of blank-looking characters.
    for blank in ["\u{3164}", "\u{2800}\u{2800}", "\u{3164} \u{3164}", "-- .."] {
        let refused = reason(PersonName::parse(blank));
        assert!(
            matches!(refused, NoVisibleLetter | DisallowedCharacters),
            "{blank:?}: {refused:?}"
        );
    }
    assert_eq!(
        reason(PersonName::parse("Ana\u{2800}Lima")),
        DisallowedCharacters
    );
    assert_eq!(
        reason(PersonName::parse("Ana \u{3164}")),
        DisallowedCharacters
    );
    assert_eq!(reason(PersonName::parse("--")), NoVisibleLetter);
    // Cyrillic "а" inside a Latin word imitates it.
    assert_eq!(reason(PersonName::parse("P\u{0430}ula Lima")), MixedScripts);
    assert_eq!(reason(CourseName::parse("\u{0391}lgebra")), MixedScripts);
    // Real names in one script each, punctuation, ordinals, words of several
    // scripts side by side.
    for fine in [
        "José da Silva",
        "O'Brien-Smith",
        "Анна Каренина",
        "Σοφία Papadopoulos",
        "山田 太郎",
        "Matemática 2º ano",
        "C++ & C#: Programação (noturno)",
        "Jean–Luc d’Arc",
        "Nguyễn Thị Minh Khai",
    ] {
        assert!(
            PersonName::parse(fine).is_ok() || CourseName::parse(fine).is_ok(),
            "{fine}"
        );
    }
    // NFC: composed and decomposed spellings are one name.
    assert_eq!(
        PersonName::parse("Jose\u{0301}").unwrap(),
        PersonName::parse("Jos\u{00E9}").unwrap()
    );
}

#[test]
fn other_names_share_the_text_rules_with_their_own_field_and_limit() {
    assert_eq!(
        InstitutionName::parse(" Escola ").unwrap().as_str(),
        "Escola"
    );
    assert_eq!(CampusName::parse("Centro").unwrap().as_str(), "Centro");
    assert_eq!(CityName::parse("Recife").unwrap().as_str(), "Recife");
    assert_eq!(CourseName::parse("Física I").unwrap().as_str(), "Física I");
    assert_eq!(ExamName::parse("Midterm").unwrap().as_str(), "Midterm");

    assert_eq!(
        InstitutionName::parse("").unwrap_err().field,
        "institution_name"
    );
    assert_eq!(CampusName::parse("").unwrap_err().field, "campus_name");
    assert_eq!(CityName::parse("").unwrap_err().field, "city");
    assert_eq!(CourseName::parse("").unwrap_err().field, "course_name");
    assert_eq!(ExamName::parse("").unwrap_err().field, "exam_name");
    assert_eq!(
        reason(CampusName::parse(&"x".repeat(121))),
        TooLong { max: 120 }
    );
    assert_eq!(reason(CityName::parse("a\u{7}b")), ControlCharacters);
}

// --- email ---

#[test]
fn email_is_trimmed_and_lowercased() {
    let email = Email::parse("  Ada.Lovelace+Notes@Example.ORG ").unwrap();
    assert_eq!(email.as_str(), "ada.lovelace+notes@example.org");
}

#[test]
fn email_rejects_empty_and_longer_than_254() {
    assert_eq!(reason(Email::parse("  ")), Empty);
    let email = format!("a@{}.com", "b".repeat(60).repeat(5));
    assert_eq!(reason(Email::parse(&email)), TooLong { max: 254 });
}

#[test]
fn email_rejects_malformed_addresses() {
    for raw in [
        "no-at-sign",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@@example.com",
        "a@b@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        "ada lovelace@example.com",
        "ada@exa_mple.com",
        "ada@-example.com",
        "ada@example..com",
        "\"ada\"@example.com",
    ] {
        assert_eq!(reason(Email::parse(raw)), InvalidFormat, "{raw}");
    }
    let long_local = format!("{}@example.com", "a".repeat(65));
    assert_eq!(reason(Email::parse(&long_local)), InvalidFormat);
}

/// Stored events are read through `Deserialize`: the same rules as `parse`, normalizing too.
#[test]
fn deserialization_validates_and_normalizes() {
    assert!(serde_json::from_str::<PersonName>("\"  \"").is_err());
    assert!(serde_json::from_str::<Email>("\"nope\"").is_err());
    let name: PersonName = serde_json::from_str("\" Ada \"").unwrap();
    assert_eq!(name.as_str(), "Ada");
    let email: Email = serde_json::from_str("\"A@B.CO\"").unwrap();
    assert_eq!(email.as_str(), "a@b.co");
}

// --- birth date ---

#[test]
fn birth_date_accepts_today_and_exactly_120_years() {
    let today = date(2026, 11, 22);
    assert!(BirthDate::parse(today, today).is_ok());
    assert!(BirthDate::parse(date(1906, 11, 22), today).is_ok());
}

#[test]
fn birth_date_rejects_the_future() {
    let today = date(2026, 11, 22);
    assert_eq!(
        reason(BirthDate::parse(date(2026, 11, 23), today)),
        InFuture
    );
}

#[test]
fn birth_date_rejects_more_than_120_years_ago() {
    let today = date(2026, 11, 22);
    assert_eq!(
        reason(BirthDate::parse(date(1905, 11, 22), today)),
        TooOld { max_years: 120 }
    );
}

#[test]
fn birth_date_parses_iso_strings() {
    let today = date(2026, 11, 22);
    assert_eq!(
        BirthDate::parse_str("2008-03-14", today).unwrap().date(),
        date(2008, 3, 14)
    );
    assert_eq!(
        reason(BirthDate::parse_str("14/03/2008", today)),
        InvalidFormat
    );
}

#[test]
fn age_is_counted_in_whole_years() {
    let born = BirthDate::parse(date(2008, 3, 14), date(2026, 1, 1)).unwrap();
    assert_eq!(born.age_on(date(2026, 3, 13)), 17);
    assert_eq!(born.age_on(date(2026, 3, 14)), 18);
    assert_eq!(born.age_on(date(2000, 1, 1)), 0);
}

// --- capacity ---

#[test]
fn capacity_accepts_bounds() {
    assert_eq!(Capacity::new(1).unwrap().get(), 1);
    assert_eq!(Capacity::new(10_000).unwrap().get(), 10_000);
    assert_eq!(Capacity::from_i64(30).unwrap().get(), 30);
}

#[test]
fn capacity_rejects_out_of_range() {
    let expected = OutOfRange {
        min: 1,
        max: 10_000,
    };
    assert_eq!(reason(Capacity::new(0)), expected);
    assert_eq!(reason(Capacity::new(10_001)), expected);
    assert_eq!(reason(Capacity::from_i64(-5)), expected);
    assert!(serde_json::from_str::<Capacity>("0").is_err());
}

// --- grade note ---

#[test]
fn grade_note_parses_up_to_two_decimals() {
    assert_eq!(GradeNote::parse("0").unwrap().hundredths(), 0);
    assert_eq!(GradeNote::parse("7").unwrap().hundredths(), 700);
    assert_eq!(GradeNote::parse("7.5").unwrap().hundredths(), 750);
    assert_eq!(GradeNote::parse("7.25").unwrap().hundredths(), 725);
    assert_eq!(GradeNote::parse("07.05").unwrap().hundredths(), 705);
    assert_eq!(GradeNote::parse("10.00").unwrap().hundredths(), 1000);
    assert_eq!(GradeNote::parse("-0").unwrap().hundredths(), 0);
}

#[test]
fn grade_note_rejects_out_of_range() {
    let expected = OutOfRange { min: 0, max: 10 };
    assert_eq!(reason(GradeNote::parse("10.01")), expected);
    assert_eq!(reason(GradeNote::parse("-1")), expected);
    assert_eq!(reason(GradeNote::parse("99999999999")), expected);
    assert_eq!(reason(GradeNote::from_hundredths(1001)), expected);
    assert_eq!(reason(GradeNote::from_f64(10.5)), expected);
    assert_eq!(reason(GradeNote::from_f64(-0.5)), expected);
}

#[test]
fn grade_note_rejects_too_many_decimals() {
    let expected = TooManyDecimals { max: 2 };
    assert_eq!(reason(GradeNote::parse("7.255")), expected);
    assert_eq!(reason(GradeNote::from_f64(7.255)), expected);
}

#[test]
fn grade_note_rejects_malformed_and_empty() {
    assert_eq!(reason(GradeNote::parse("")), Empty);
    for raw in [
        "abc", "7,5", "7.", ".5", "1e1", "+7", "7.-1", "-", "--5", "-+5",
    ] {
        assert_eq!(reason(GradeNote::parse(raw)), InvalidFormat, "{raw}");
    }
    assert_eq!(reason(GradeNote::from_f64(f64::NAN)), InvalidFormat);
}

#[test]
fn grade_note_from_f64_tolerates_binary_representation() {
    assert_eq!(GradeNote::from_f64(7.35).unwrap().hundredths(), 735);
    assert_eq!(GradeNote::from_f64(0.1 + 0.2).unwrap().hundredths(), 30);
    assert!((GradeNote::from_f64(8.4).unwrap().as_f64() - 8.4).abs() < 1e-9);
}

#[test]
fn grade_note_serializes_as_two_decimal_string() {
    let note = GradeNote::parse("7.5").unwrap();
    assert_eq!(note.to_string(), "7.50");
    assert_eq!(
        serde_json::to_value(note).unwrap(),
        serde_json::json!("7.50")
    );
    assert_eq!(serde_json::from_str::<GradeNote>("\"7.50\"").unwrap(), note);
    assert!(serde_json::from_str::<GradeNote>("\"11\"").is_err());
}

#[test]
fn validation_error_can_be_reported_against_another_field() {
    let err = Email::parse("nope")
        .unwrap_err()
        .for_field("applicant_email");
    assert_eq!(err.field, "applicant_email");
    assert_eq!(err.code(), "INVALID_FORMAT");
    assert_eq!(err.kind(), RejectionKind::Validation);
    assert_eq!(
        err.to_string(),
        "invalid applicant_email: has an invalid format"
    );
}
