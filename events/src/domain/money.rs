//! Money (docs/api/guide.md, "Amounts and currencies"): currency codes, the currency table, amounts
//! as exact base units, and checked balance arithmetic.
//!
//! Every amount is an `i128` count of base units (satoshi, wei, cent), never a float. Parsing is
//! strict and exact (nothing is ever rounded), arithmetic is checked (overflow is a refusal, not a
//! panic), and every refusal is a named [`MoneyError`]. Reading a currency table from disk is the
//! caller's job: this module only parses text.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest currency code, in ASCII characters.
pub const CURRENCY_CODE_LEN_MAX: usize = 16;

/// Most decimals a currency may have. It is `rust_decimal`'s largest scale, so every base unit of
/// every currency can still be written in the `decimal` amount format.
pub const CURRENCY_DECIMALS_MAX: u8 = 28;

/// Largest amount magnitude, in base units. `i128::MIN` is excluded so that every amount can be
/// negated (a transfer's other side) without overflow.
pub const AMOUNT_BASE_UNITS_MAX: i128 = i128::MAX;

/// The shipped currency table; deployments may replace it with their own file of the same form.
const DEFAULT_TABLE_JSON: &str = include_str!("currencies.default.json");

/// Every way money input or money arithmetic can be refused. Messages are whole sentences fit for
/// a 400 body; [`MoneyError::code`] is the stable machine-readable name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the amount is empty")]
    Empty,
    #[error("the amount must be {}", .format.shape())]
    NotANumber { format: AmountFormat },
    #[error("the amount has more than {decimals} fractional digits, the currency's precision; amounts are never rounded")]
    TooPrecise { decimals: u8 },
    #[error("the amount, or a balance it would produce, is out of range")]
    Overflow,
    #[error("the amount must not be zero")]
    Zero,
    #[error("the amount must not be negative")]
    Negative,
    #[error("the currency {0} is not in the currency table")]
    UnknownCurrency(String),
    #[error("a currency code is 1 to {CURRENCY_CODE_LEN_MAX} upper-case ASCII letters or digits, like \"BTC\"")]
    BadCurrencyCode,
    #[error(
        "insufficient available balance: {requested} base units requested, {available} available"
    )]
    Insufficient { available: i128, requested: i128 },
    #[error("insufficient held balance: {requested} base units requested, {held} held")]
    InsufficientHeld { held: i128, requested: i128 },
    #[error("the currency table lists {0} more than once")]
    DuplicateCurrency(String),
    #[error("the currency table gives {code} {decimals} decimals; at most {CURRENCY_DECIMALS_MAX} are allowed")]
    DecimalsTooLarge { code: String, decimals: u32 },
    #[error("the currency table is malformed: {0}")]
    BadCurrencyTable(String),
}

impl MoneyError {
    /// The stable snake_case name of this refusal, for the error body's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "amount_empty",
            Self::NotANumber { .. } => "amount_not_a_number",
            Self::TooPrecise { .. } => "amount_too_precise",
            Self::Overflow => "amount_overflow",
            Self::Zero => "amount_zero",
            Self::Negative => "amount_negative",
            Self::UnknownCurrency(_) => "unknown_currency",
            Self::BadCurrencyCode => "bad_currency_code",
            Self::Insufficient { .. } => "insufficient_funds",
            Self::InsufficientHeld { .. } => "insufficient_held_funds",
            Self::DuplicateCurrency(_) => "duplicate_currency",
            Self::DecimalsTooLarge { .. } => "currency_decimals_too_large",
            Self::BadCurrencyTable(_) => "bad_currency_table",
        }
    }
}

/// A currency code such as `BTC` or `USDC`: 1 to 16 upper-case ASCII letters or digits. Lower case
/// is refused rather than folded, so one currency has exactly one spelling in events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode(String);

impl CurrencyCode {
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let well_formed = (1..=CURRENCY_CODE_LEN_MAX).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !well_formed {
            return Err(MoneyError::BadCurrencyCode);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CurrencyCode {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, MoneyError> {
        Self::parse(text)
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = MoneyError;

    fn try_from(text: String) -> Result<Self, MoneyError> {
        Self::parse(&text)
    }
}

impl From<CurrencyCode> for String {
    fn from(code: CurrencyCode) -> Self {
        code.0
    }
}

impl AsRef<str> for CurrencyCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The currencies the engine accepts, each with its number of decimals (BTC 8, ETH 18, USD 2…).
/// Its serde form is `{"currencies":[{"code":"BTC","decimals":8},…]}`, sorted by code: the form of
/// the configuration file and of `GET /api/admin/v1/currencies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyTable {
    decimals_by_code: BTreeMap<CurrencyCode, u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CurrencyTableJson {
    currencies: Vec<CurrencyJson>,
}

/// Loosely typed on purpose, so that a bad code or an oversized `decimals` gets its own error.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CurrencyJson {
    code: String,
    decimals: u32,
}

impl CurrencyTable {
    /// The shipped default table (`currencies.default.json`).
    pub fn default_table() -> Self {
        Self::from_json(DEFAULT_TABLE_JSON)
            .expect("the shipped currencies.default.json is valid; a unit test checks it")
    }

    /// Parses a table in its JSON form. Duplicate codes, bad codes, decimals above
    /// [`CURRENCY_DECIMALS_MAX`] and unknown fields are errors.
    pub fn from_json(text: &str) -> Result<Self, MoneyError> {
        let json: CurrencyTableJson = serde_json::from_str(text)
            .map_err(|error| MoneyError::BadCurrencyTable(error.to_string()))?;
        Self::from_json_form(json)
    }

    fn from_json_form(json: CurrencyTableJson) -> Result<Self, MoneyError> {
        let mut decimals_by_code = BTreeMap::new();
        for (index, entry) in json.currencies.into_iter().enumerate() {
            let code = CurrencyCode::parse(&entry.code).map_err(|error| {
                MoneyError::BadCurrencyTable(format!("currencies[{index}]: {error}"))
            })?;
            let decimals = u8::try_from(entry.decimals)
                .ok()
                .filter(|decimals| *decimals <= CURRENCY_DECIMALS_MAX)
                .ok_or_else(|| MoneyError::DecimalsTooLarge {
                    code: entry.code.clone(),
                    decimals: entry.decimals,
                })?;
            if decimals_by_code.insert(code, decimals).is_some() {
                return Err(MoneyError::DuplicateCurrency(entry.code));
            }
        }
        Ok(Self { decimals_by_code })
    }

    fn to_json_form(&self) -> CurrencyTableJson {
        let currencies = self
            .iter()
            .map(|(code, decimals)| CurrencyJson {
                code: code.to_string(),
                decimals: u32::from(decimals),
            })
            .collect();
        CurrencyTableJson { currencies }
    }

    pub fn decimals(&self, code: &CurrencyCode) -> Option<u8> {
        self.decimals_by_code.get(code).copied()
    }

    /// Like [`CurrencyTable::decimals`], refusing a currency the table does not list.
    pub fn decimals_of(&self, code: &CurrencyCode) -> Result<u8, MoneyError> {
        self.decimals(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    /// Every currency with its decimals, sorted by code.
    pub fn iter(&self) -> impl Iterator<Item = (&CurrencyCode, u8)> {
        self.decimals_by_code
            .iter()
            .map(|(code, decimals)| (code, *decimals))
    }

    pub fn len(&self) -> usize {
        self.decimals_by_code.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decimals_by_code.is_empty()
    }
}

impl Serialize for CurrencyTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json_form().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CurrencyTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = CurrencyTableJson::deserialize(deserializer)?;
        Self::from_json_form(json).map_err(serde::de::Error::custom)
    }
}

/// How a partner writes amounts on the wire (docs/api/guide.md). Responses always use base units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AmountFormat {
    /// Integer strings of base units: `"-20000000"`.
    #[default]
    BaseUnits,
    /// Whole-unit decimal strings: `"-0.2"`.
    Decimal,
}

impl AmountFormat {
    /// The serde name: `baseUnits` or `decimal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BaseUnits => "baseUnits",
            Self::Decimal => "decimal",
        }
    }

    /// What a well-formed amount looks like, for error messages.
    fn shape(self) -> &'static str {
        match self {
            Self::BaseUnits => {
                "an integer string of base units: an optional '-' then digits, like \"-20000000\""
            }
            Self::Decimal => {
                "a decimal string of whole units: an optional '-', digits, then optionally '.' and digits, like \"-0.2\""
            }
        }
    }
}

impl fmt::Display for AmountFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a wire amount into base units of a currency with `decimals` decimals.
///
/// The grammar is strict in both formats: an optional leading `-` (never `+`), ASCII digits, and
/// for `Decimal` an optional `.` followed by at least one digit. No whitespace, exponents, digit
/// separators, or bare `.5`/`5.`. Leading zeros are accepted (`"007"` is 7) and `"-0"` is zero.
/// Fractional digits are taken as written: `"1.500000000"` for an 8-decimal currency is
/// [`MoneyError::TooPrecise`] even though its last digit is zero, because the API counts digits.
/// A `Decimal` amount must fit `rust_decimal` (at most 28–29 significant digits); a larger one
/// is [`MoneyError::Overflow`], as is any result beyond ±[`AMOUNT_BASE_UNITS_MAX`].
pub fn parse_amount(text: &str, format: AmountFormat, decimals: u8) -> Result<i128, MoneyError> {
    if text.is_empty() {
        return Err(MoneyError::Empty);
    }
    let amount = match format {
        AmountFormat::BaseUnits => parse_base_units(text)?,
        AmountFormat::Decimal => parse_decimal(text, decimals)?,
    };
    if amount.unsigned_abs() > AMOUNT_BASE_UNITS_MAX.unsigned_abs() {
        return Err(MoneyError::Overflow);
    }
    Ok(amount)
}

/// Like [`parse_amount`], refusing zero: instruction amounts are non-zero (docs/api/guide.md).
pub fn parse_nonzero_amount(
    text: &str,
    format: AmountFormat,
    decimals: u8,
) -> Result<i128, MoneyError> {
    match parse_amount(text, format, decimals)? {
        0 => Err(MoneyError::Zero),
        amount => Ok(amount),
    }
}

/// The wire form of an amount: its base units as a decimal integer string.
pub fn format_base_units(amount: i128) -> String {
    amount.to_string()
}

fn is_ascii_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_base_units(text: &str) -> Result<i128, MoneyError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !is_ascii_digits(digits) {
        return Err(MoneyError::NotANumber {
            format: AmountFormat::BaseUnits,
        });
    }
    // The grammar is checked above, so the only failure left is a value beyond i128.
    text.parse::<i128>().map_err(|_| MoneyError::Overflow)
}

fn parse_decimal(text: &str, decimals: u8) -> Result<i128, MoneyError> {
    let fraction_digits = decimal_fraction_digits(text)?;
    if fraction_digits > usize::from(decimals) {
        return Err(MoneyError::TooPrecise { decimals });
    }
    // The grammar is checked above (rust_decimal alone would accept '+', '_' and "5."), so the
    // only failure left is a value beyond rust_decimal's 96-bit mantissa.
    let exact = Decimal::from_str_exact(text).map_err(|_| MoneyError::Overflow)?;
    let scale_gap = u32::from(decimals)
        .checked_sub(exact.scale())
        .ok_or(MoneyError::Overflow)?;
    let factor = 10_i128.checked_pow(scale_gap).ok_or(MoneyError::Overflow)?;
    exact
        .mantissa()
        .checked_mul(factor)
        .ok_or(MoneyError::Overflow)
}

/// Checks the `Decimal` grammar and returns how many fractional digits are written.
fn decimal_fraction_digits(text: &str) -> Result<usize, MoneyError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    if !is_ascii_digits(whole) || !fraction.is_none_or(is_ascii_digits) {
        return Err(MoneyError::NotANumber {
            format: AmountFormat::Decimal,
        });
    }
    Ok(fraction.map_or(0, str::len))
}

/// What one account holds in one currency, in base units: `available` may be spent or held;
/// `held` is reserved for a pending movement.
///
/// Invariant, kept by every method: both parts are ≥ 0 and their sum fits `i128`, so
/// [`Balance::total`] never overflows and moves between the parts never can.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "BalanceParts")]
pub struct Balance {
    available: i128,
    held: i128,
}

/// A balance as stored (in a snapshot), checked by [`Balance::new`] before it becomes one.
#[derive(Deserialize)]
struct BalanceParts {
    available: i128,
    held: i128,
}

impl TryFrom<BalanceParts> for Balance {
    type Error = MoneyError;

    fn try_from(parts: BalanceParts) -> Result<Self, Self::Error> {
        Self::new(parts.available, parts.held)
    }
}

impl Balance {
    pub const ZERO: Self = Self {
        available: 0,
        held: 0,
    };

    /// Rebuilds a balance from stored parts, refusing what the invariant forbids.
    pub fn new(available: i128, held: i128) -> Result<Self, MoneyError> {
        let available = non_negative(available)?;
        let held = non_negative(held)?;
        available.checked_add(held).ok_or(MoneyError::Overflow)?;
        Ok(Self { available, held })
    }

    pub fn available(self) -> i128 {
        self.available
    }

    pub fn held(self) -> i128 {
        self.held
    }

    /// `available + held`; cannot overflow (see the invariant).
    pub fn total(self) -> i128 {
        self.available.saturating_add(self.held)
    }

    /// Adds to `available`.
    pub fn credit(self, amount: i128) -> Result<Self, MoneyError> {
        let amount = non_negative(amount)?;
        self.total()
            .checked_add(amount)
            .ok_or(MoneyError::Overflow)?;
        let available = self
            .available
            .checked_add(amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { available, ..self })
    }

    /// Takes from `available`, refusing to go below zero.
    pub fn debit(self, amount: i128) -> Result<Self, MoneyError> {
        let available = self.take_available(amount)?;
        Ok(Self { available, ..self })
    }

    /// Moves from `available` to `held`, refusing more than is available.
    pub fn hold(self, amount: i128) -> Result<Self, MoneyError> {
        let available = self.take_available(amount)?;
        let held = self.held.checked_add(amount).ok_or(MoneyError::Overflow)?;
        Ok(Self { available, held })
    }

    /// Moves from `held` back to `available`, refusing more than is held.
    pub fn release(self, amount: i128) -> Result<Self, MoneyError> {
        let held = self.take_held(amount)?;
        let available = self
            .available
            .checked_add(amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { available, held })
    }

    /// Removes from `held` (the held funds left the account), refusing more than is held.
    pub fn consume_held(self, amount: i128) -> Result<Self, MoneyError> {
        let held = self.take_held(amount)?;
        Ok(Self { held, ..self })
    }

    fn take_available(self, amount: i128) -> Result<i128, MoneyError> {
        let amount = non_negative(amount)?;
        if amount > self.available {
            return Err(MoneyError::Insufficient {
                available: self.available,
                requested: amount,
            });
        }
        Ok(self.available - amount)
    }

    fn take_held(self, amount: i128) -> Result<i128, MoneyError> {
        let amount = non_negative(amount)?;
        if amount > self.held {
            return Err(MoneyError::InsufficientHeld {
                held: self.held,
                requested: amount,
            });
        }
        Ok(self.held - amount)
    }
}

/// Balance operations take magnitudes: a negative credit would be a debit that skips its check.
/// Zero is allowed and changes nothing.
fn non_negative(amount: i128) -> Result<i128, MoneyError> {
    if amount < 0 {
        return Err(MoneyError::Negative);
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BTC: u8 = 8;
    const ETH: u8 = 18;
    const USD: u8 = 2;
    const I128_MAX_TEXT: &str = "170141183460469231731687303715884105727";
    const I128_MIN_TEXT: &str = "-170141183460469231731687303715884105728";

    fn not_a_number(format: AmountFormat) -> MoneyError {
        MoneyError::NotANumber { format }
    }

    fn code(text: &str) -> CurrencyCode {
        CurrencyCode::parse(text).unwrap()
    }

    /// The decimal string of `mantissa × 10^-scale`, written with exactly `scale` fraction digits.
    fn decimal_text(mantissa: i128, scale: usize) -> String {
        let digits = format!("{:0>width$}", mantissa.unsigned_abs(), width = scale + 1);
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        let sign = if mantissa < 0 { "-" } else { "" };
        if scale == 0 {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{fraction}")
        }
    }

    #[test]
    fn parses_base_units() {
        let cases: &[(&str, Result<i128, MoneyError>)] = &[
            ("0", Ok(0)),
            ("-0", Ok(0)),
            ("1", Ok(1)),
            ("-20000000", Ok(-20_000_000)),
            ("007", Ok(7)),
            (I128_MAX_TEXT, Ok(i128::MAX)),
            ("-170141183460469231731687303715884105727", Ok(-i128::MAX)),
            ("", Err(MoneyError::Empty)),
            ("-", Err(not_a_number(AmountFormat::BaseUnits))),
            ("--1", Err(not_a_number(AmountFormat::BaseUnits))),
            ("+1", Err(not_a_number(AmountFormat::BaseUnits))),
            (" 1", Err(not_a_number(AmountFormat::BaseUnits))),
            ("1 ", Err(not_a_number(AmountFormat::BaseUnits))),
            ("1.0", Err(not_a_number(AmountFormat::BaseUnits))),
            ("1e3", Err(not_a_number(AmountFormat::BaseUnits))),
            ("1_000", Err(not_a_number(AmountFormat::BaseUnits))),
            ("0x10", Err(not_a_number(AmountFormat::BaseUnits))),
            ("١٢", Err(not_a_number(AmountFormat::BaseUnits))),
            ("1-", Err(not_a_number(AmountFormat::BaseUnits))),
            (
                "170141183460469231731687303715884105728",
                Err(MoneyError::Overflow),
            ),
            (I128_MIN_TEXT, Err(MoneyError::Overflow)),
            (&"9".repeat(40), Err(MoneyError::Overflow)),
            (&format!("-{}", "1".repeat(40)), Err(MoneyError::Overflow)),
        ];
        for (text, expected) in cases {
            for decimals in [0, USD, BTC, ETH] {
                let parsed = parse_amount(text, AmountFormat::BaseUnits, decimals);
                assert_eq!(&parsed, expected, "{text:?} with {decimals} decimals");
            }
        }
    }

    #[test]
    fn parses_decimals() {
        let cases: &[(&str, u8, Result<i128, MoneyError>)] = &[
            ("-0.2", BTC, Ok(-20_000_000)),
            ("1", BTC, Ok(100_000_000)),
            ("1.5", BTC, Ok(150_000_000)),
            ("1.50000000", BTC, Ok(150_000_000)),
            ("0.00000001", BTC, Ok(1)),
            ("-0", BTC, Ok(0)),
            ("0.0", BTC, Ok(0)),
            ("21000000", BTC, Ok(2_100_000_000_000_000)),
            (
                "123456789.123456789012345678",
                ETH,
                Ok(123_456_789_123_456_789_012_345_678),
            ),
            ("0.000000000000000001", ETH, Ok(1)),
            ("1", ETH, Ok(1_000_000_000_000_000_000)),
            (
                "-79228162514.264337593543950335",
                ETH,
                Ok(-79_228_162_514_264_337_593_543_950_335),
            ),
            ("19.99", USD, Ok(1999)),
            ("-0.5", USD, Ok(-50)),
            ("007.10", USD, Ok(710)),
            ("0000000000000000000000000000000000001.5", USD, Ok(150)),
            ("5", 0, Ok(5)),
            ("5.0", 0, Err(MoneyError::TooPrecise { decimals: 0 })),
            (
                "1.500000000",
                BTC,
                Err(MoneyError::TooPrecise { decimals: BTC }),
            ),
            (
                "0.000000001",
                BTC,
                Err(MoneyError::TooPrecise { decimals: BTC }),
            ),
            ("0.001", USD, Err(MoneyError::TooPrecise { decimals: USD })),
            ("", BTC, Err(MoneyError::Empty)),
            ("-", BTC, Err(not_a_number(AmountFormat::Decimal))),
            (".5", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("-.5", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("5.", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("+1", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1e3", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1E-3", BTC, Err(not_a_number(AmountFormat::Decimal))),
            (" 1", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1.0 ", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1,5", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1_000.5", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1..2", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("1.2.3", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("NaN", BTC, Err(not_a_number(AmountFormat::Decimal))),
            ("inf", BTC, Err(not_a_number(AmountFormat::Decimal))),
            (&"9".repeat(40), BTC, Err(MoneyError::Overflow)),
            (
                &format!("-{}.5", "9".repeat(40)),
                BTC,
                Err(MoneyError::Overflow),
            ),
            // 10^21 ETH is 10^39 wei: within rust_decimal, beyond i128.
            ("1000000000000000000000", ETH, Err(MoneyError::Overflow)),
            // Within i128 once scaled, but beyond rust_decimal's 96-bit mantissa.
            (
                &format!("1{}", "0".repeat(30)),
                USD,
                Err(MoneyError::Overflow),
            ),
            (
                "79228162514.264337593543950336",
                ETH,
                Err(MoneyError::Overflow),
            ),
        ];
        for (text, decimals, expected) in cases {
            let parsed = parse_amount(text, AmountFormat::Decimal, *decimals);
            assert_eq!(&parsed, expected, "{text:?} with {decimals} decimals");
        }
    }

    #[test]
    fn refuses_zero_instruction_amounts() {
        for format in [AmountFormat::BaseUnits, AmountFormat::Decimal] {
            for text in ["0", "-0", "000"] {
                assert_eq!(
                    parse_nonzero_amount(text, format, BTC),
                    Err(MoneyError::Zero)
                );
            }
            assert_eq!(
                parse_nonzero_amount("", format, BTC),
                Err(MoneyError::Empty)
            );
            assert_eq!(parse_nonzero_amount("-1", format, 0), Ok(-1));
        }
        assert_eq!(
            parse_nonzero_amount("0.00", AmountFormat::Decimal, USD),
            Err(MoneyError::Zero)
        );
    }

    #[test]
    fn formats_base_units() {
        assert_eq!(format_base_units(-20_000_000), "-20000000");
        assert_eq!(format_base_units(0), "0");
        assert_eq!(format_base_units(i128::MAX), I128_MAX_TEXT);
    }

    #[test]
    fn amount_format_has_camel_case_names_and_defaults_to_base_units() {
        assert_eq!(AmountFormat::default(), AmountFormat::BaseUnits);
        for format in [AmountFormat::BaseUnits, AmountFormat::Decimal] {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
            assert_eq!(serde_json::from_str::<AmountFormat>(&json).unwrap(), format);
        }
        assert!(serde_json::from_str::<AmountFormat>("\"base_units\"").is_err());
    }

    #[test]
    fn parses_currency_codes() {
        for text in ["BTC", "USDC", "A", "1INCH", "ABCDEFGHIJKLMNOP"] {
            assert_eq!(
                CurrencyCode::parse(text).map(String::from),
                Ok(text.to_owned())
            );
        }
        for text in [
            "",
            "btc",
            "Btc",
            "BT C",
            "BTC-X",
            " BTC",
            "ÄÖ",
            "ABCDEFGHIJKLMNOPQ",
        ] {
            assert_eq!(
                CurrencyCode::parse(text),
                Err(MoneyError::BadCurrencyCode),
                "{text:?}"
            );
        }
    }

    #[test]
    fn currency_codes_are_validated_when_deserialized() {
        let btc: CurrencyCode = serde_json::from_str("\"BTC\"").unwrap();
        assert_eq!(btc.as_str(), "BTC");
        assert_eq!(serde_json::to_string(&btc).unwrap(), "\"BTC\"");
        assert!(serde_json::from_str::<CurrencyCode>("\"btc\"").is_err());

        let bytes = postcard::to_stdvec(&btc).unwrap();
        assert_eq!(postcard::from_bytes::<CurrencyCode>(&bytes).unwrap(), btc);
        let bad = postcard::to_stdvec("b tc").unwrap();
        assert!(postcard::from_bytes::<CurrencyCode>(&bad).is_err());
    }

    #[test]
    fn default_table_lists_the_shipped_currencies_sorted() {
        let table = CurrencyTable::default_table();
        let listed: Vec<(&str, u8)> = table.iter().map(|(c, d)| (c.as_str(), d)).collect();
        let expected = [
            ("BTC", 8),
            ("ETH", 18),
            ("EUR", 2),
            ("LTC", 8),
            ("SOL", 9),
            ("USD", 2),
            ("USDC", 6),
            ("USDT", 6),
            ("XRP", 6),
        ];
        assert_eq!(listed, expected);
        assert_eq!(table.len(), 9);
        assert_eq!(table.decimals(&code("ETH")), Some(18));
        assert_eq!(table.decimals(&code("DOGE")), None);
        assert_eq!(
            table.decimals_of(&code("DOGE")),
            Err(MoneyError::UnknownCurrency("DOGE".into()))
        );
    }

    #[test]
    fn table_serializes_as_the_admin_response_and_round_trips() {
        let table = CurrencyTable::from_json(
            r#"{"currencies":[{"code":"USD","decimals":2},{"code":"BTC","decimals":8}]}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(
            json,
            r#"{"currencies":[{"code":"BTC","decimals":8},{"code":"USD","decimals":2}]}"#
        );
        assert_eq!(serde_json::from_str::<CurrencyTable>(&json).unwrap(), table);
        let shipped = CurrencyTable::default_table();
        let again = serde_json::to_string(&shipped).unwrap();
        assert_eq!(CurrencyTable::from_json(&again).unwrap(), shipped);
    }

    #[test]
    fn refuses_bad_tables() {
        let table =
            |entries: &str| CurrencyTable::from_json(&format!(r#"{{"currencies":[{entries}]}}"#));
        assert_eq!(
            table(r#"{"code":"BTC","decimals":8},{"code":"BTC","decimals":6}"#),
            Err(MoneyError::DuplicateCurrency("BTC".into()))
        );
        assert_eq!(
            table(r#"{"code":"DUST","decimals":29}"#),
            Err(MoneyError::DecimalsTooLarge {
                code: "DUST".into(),
                decimals: 29
            })
        );
        assert_eq!(
            table(r#"{"code":"DUST","decimals":300}"#),
            Err(MoneyError::DecimalsTooLarge {
                code: "DUST".into(),
                decimals: 300
            })
        );
        assert_eq!(
            table(r#"{"code":"DUST","decimals":28}"#).map(|t| t.len()),
            Ok(1)
        );
        assert_eq!(table("").map(|t| t.is_empty()), Ok(true));
        let malformed = [
            r#"{"code":"btc","decimals":8}"#,
            r#"{"code":"BTC","decimals":-1}"#,
            r#"{"code":"BTC","decimals":"8"}"#,
            r#"{"code":"BTC"}"#,
            r#"{"code":"BTC","decimals":8,"name":"Bitcoin"}"#,
        ];
        for entries in malformed {
            let refused = table(entries);
            assert!(
                matches!(refused, Err(MoneyError::BadCurrencyTable(_))),
                "{entries}: {refused:?}"
            );
        }
        assert!(matches!(
            CurrencyTable::from_json("{"),
            Err(MoneyError::BadCurrencyTable(_))
        ));
        assert!(serde_json::from_str::<CurrencyTable>(
            r#"{"currencies":[{"code":"BTC","decimals":99}]}"#
        )
        .is_err());
    }

    #[test]
    fn error_codes_are_unique_snake_case() {
        let errors = [
            MoneyError::Empty,
            not_a_number(AmountFormat::Decimal),
            MoneyError::TooPrecise { decimals: 2 },
            MoneyError::Overflow,
            MoneyError::Zero,
            MoneyError::Negative,
            MoneyError::UnknownCurrency("DOGE".into()),
            MoneyError::BadCurrencyCode,
            MoneyError::Insufficient {
                available: 1,
                requested: 2,
            },
            MoneyError::InsufficientHeld {
                held: 1,
                requested: 2,
            },
            MoneyError::DuplicateCurrency("BTC".into()),
            MoneyError::DecimalsTooLarge {
                code: "X".into(),
                decimals: 29,
            },
            MoneyError::BadCurrencyTable("x".into()),
        ];
        let codes: std::collections::BTreeSet<_> = errors.iter().map(MoneyError::code).collect();
        assert_eq!(codes.len(), errors.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(
            not_a_number(AmountFormat::BaseUnits).to_string(),
            "the amount must be an integer string of base units: an optional '-' then digits, like \"-20000000\""
        );
        assert_eq!(
            MoneyError::TooPrecise { decimals: 8 }.to_string(),
            "the amount has more than 8 fractional digits, the currency's precision; amounts are never rounded"
        );
    }

    #[test]
    fn balance_moves_funds_between_parts() {
        let balance = Balance::ZERO.credit(100).unwrap();
        assert_eq!((balance.available(), balance.held()), (100, 0));
        let balance = balance.hold(30).unwrap();
        assert_eq!((balance.available(), balance.held()), (70, 30));
        let balance = balance.release(10).unwrap();
        assert_eq!((balance.available(), balance.held()), (80, 20));
        let balance = balance.consume_held(20).unwrap();
        assert_eq!((balance.available(), balance.held()), (80, 0));
        let balance = balance.debit(80).unwrap();
        assert_eq!(balance, Balance::ZERO);
        assert_eq!(Balance::ZERO.credit(0), Ok(Balance::ZERO));
    }

    #[test]
    fn balance_refuses_what_would_break_it() {
        let balance = Balance::new(10, 5).unwrap();
        let insufficient = MoneyError::Insufficient {
            available: 10,
            requested: 11,
        };
        assert_eq!(balance.debit(11), Err(insufficient.clone()));
        assert_eq!(balance.hold(11), Err(insufficient));
        let insufficient_held = MoneyError::InsufficientHeld {
            held: 5,
            requested: 6,
        };
        assert_eq!(balance.release(6), Err(insufficient_held.clone()));
        assert_eq!(balance.consume_held(6), Err(insufficient_held));
        assert_eq!(balance.credit(-1), Err(MoneyError::Negative));
        assert_eq!(balance.debit(i128::MIN), Err(MoneyError::Negative));
        assert_eq!(balance.credit(i128::MAX - 14), Err(MoneyError::Overflow));
        assert_eq!(
            balance.credit(i128::MAX - 15).map(Balance::total),
            Ok(i128::MAX)
        );
        assert_eq!(Balance::new(-1, 0), Err(MoneyError::Negative));
        assert_eq!(Balance::new(0, -1), Err(MoneyError::Negative));
        assert_eq!(Balance::new(i128::MAX, 1), Err(MoneyError::Overflow));
    }

    #[derive(Clone, Copy, Debug)]
    enum Operation {
        Credit,
        Debit,
        Hold,
        Release,
        ConsumeHeld,
    }

    fn operation() -> impl Strategy<Value = (Operation, i128)> {
        let kind = prop_oneof![
            Just(Operation::Credit),
            Just(Operation::Debit),
            Just(Operation::Hold),
            Just(Operation::Release),
            Just(Operation::ConsumeHeld),
        ];
        let amount = prop_oneof![
            4 => 0..1_000_i128,
            1 => any::<i128>(),
            1 => (i128::MAX - 1_000)..=i128::MAX,
        ];
        (kind, amount)
    }

    /// The refusal a balance operation must give, if any, by a model independent of the code.
    fn expected_refusal(kind: Operation, before: Balance, amount: i128) -> Option<MoneyError> {
        if amount < 0 {
            return Some(MoneyError::Negative);
        }
        let (available, held) = (before.available(), before.held());
        match kind {
            Operation::Credit => before
                .total()
                .checked_add(amount)
                .is_none()
                .then_some(MoneyError::Overflow),
            Operation::Debit | Operation::Hold => {
                (amount > available).then_some(MoneyError::Insufficient {
                    available,
                    requested: amount,
                })
            }
            Operation::Release | Operation::ConsumeHeld => {
                (amount > held).then_some(MoneyError::InsufficientHeld {
                    held,
                    requested: amount,
                })
            }
        }
    }

    proptest! {
        #[test]
        fn base_units_round_trip(
            amount in any::<i128>().prop_filter("symmetric range", |a| *a != i128::MIN),
        ) {
            let text = format_base_units(amount);
            prop_assert_eq!(parse_amount(&text, AmountFormat::BaseUnits, BTC), Ok(amount));
        }

        #[test]
        fn decimal_strings_parse_to_exact_base_units(
            mantissa in -(1_i128 << 96) + 1..(1_i128 << 96),
            decimals in 0..=CURRENCY_DECIMALS_MAX,
            scale_seed in any::<u8>(),
        ) {
            let scale = usize::from(scale_seed % (decimals + 1));
            let text = decimal_text(mantissa, scale);
            let expected = 10_i128
                .checked_pow(u32::from(decimals) - scale as u32)
                .and_then(|factor| mantissa.checked_mul(factor))
                .ok_or(MoneyError::Overflow);
            let parsed = parse_amount(&text, AmountFormat::Decimal, decimals);
            prop_assert_eq!(parsed, expected, "{}", text);
        }

        #[test]
        fn large_decimal_strings_are_exact_or_overflow(
            mantissa in any::<i128>(),
            decimals in 0..=CURRENCY_DECIMALS_MAX,
            scale_seed in any::<u8>(),
        ) {
            let scale = usize::from(scale_seed % (decimals + 1));
            let text = decimal_text(mantissa, scale);
            let exact = 10_i128
                .checked_pow(u32::from(decimals) - scale as u32)
                .and_then(|factor| mantissa.checked_mul(factor))
                .filter(|amount| *amount != i128::MIN);
            match parse_amount(&text, AmountFormat::Decimal, decimals) {
                Ok(amount) => prop_assert_eq!(Some(amount), exact, "{}", text),
                Err(error) => prop_assert_eq!(error, MoneyError::Overflow, "{}", text),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(
            text in "[-+0-9.eE_ ]{0,48}|\\PC{0,48}",
            decimals in 0..=CURRENCY_DECIMALS_MAX,
        ) {
            for format in [AmountFormat::BaseUnits, AmountFormat::Decimal] {
                if let Ok(amount) = parse_amount(&text, format, decimals) {
                    prop_assert!(amount != i128::MIN);
                }
            }
        }

        #[test]
        fn balances_stay_non_negative_and_conserve_funds(
            operations in prop::collection::vec(operation(), 0..64),
        ) {
            let mut balance = Balance::ZERO;
            for (kind, amount) in operations {
                let before = balance;
                let result = match kind {
                    Operation::Credit => before.credit(amount),
                    Operation::Debit => before.debit(amount),
                    Operation::Hold => before.hold(amount),
                    Operation::Release => before.release(amount),
                    Operation::ConsumeHeld => before.consume_held(amount),
                };
                prop_assert_eq!(result.clone().err(), expected_refusal(kind, before, amount));
                let Ok(after) = result else { continue };
                prop_assert!(after.available() >= 0 && after.held() >= 0);
                prop_assert!(after.available().checked_add(after.held()).is_some());
                let expected_total = match kind {
                    Operation::Credit => before.total() + amount,
                    Operation::Debit | Operation::ConsumeHeld => before.total() - amount,
                    Operation::Hold | Operation::Release => before.total(),
                };
                prop_assert_eq!(after.total(), expected_total);
                balance = after;
            }
        }
    }
}
