//! Upcasters: pure functions that lift a stored payload of an old schema version to the next
//! version, so that only the current layout of each type is decoded into domain values.

use super::legacy;
use super::DecodeError;
use crate::domain::connection::{
    AllocationCleared, AllocationReleased, ConnectionCreated, ConnectionUpdated,
};
use crate::domain::partner::{PartnerRegistered, PartnerUpdated};

/// One step: a payload of `(type_id, from_version)` becomes one of `from_version + 1`.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    pub type_id: u32,
    pub from_version: u16,
    pub up: fn(&[u8]) -> Result<Vec<u8>, DecodeError>,
}

/// The product's upcasters. Every schema change of a published event adds one here.
///
/// v1 → v2 of the connection and allocation events: the signed request (`payload`,
/// `signature`, key id) is kept from v2 on; a v1 event lifts with it absent (`None`).
///
/// v2 → v3 of `ConnectionCreated`: the connection key is an object of the partner's schema; a
/// v2 (or lifted v1) plain string becomes a `token` key. v1 → v2 of `PartnerRegistered` and
/// `PartnerUpdated`: the partner's connection key schema, absent (`None`) before v2, which a
/// partner reads as `token` (ADR 0011).
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        type_id: 6,
        from_version: 1,
        up: lift::<legacy::PartnerRegisteredV1, PartnerRegistered>,
    },
    Upcaster {
        type_id: 7,
        from_version: 1,
        up: lift::<legacy::PartnerUpdatedV1, PartnerUpdated>,
    },
    Upcaster {
        type_id: 12,
        from_version: 1,
        up: lift::<legacy::ConnectionCreatedV1, legacy::ConnectionCreatedV2>,
    },
    Upcaster {
        type_id: 12,
        from_version: 2,
        up: lift::<legacy::ConnectionCreatedV2, ConnectionCreated>,
    },
    Upcaster {
        type_id: 13,
        from_version: 1,
        up: lift::<legacy::ConnectionUpdatedV1, ConnectionUpdated>,
    },
    Upcaster {
        type_id: 14,
        from_version: 1,
        up: lift::<legacy::AllocationClearedV1, AllocationCleared>,
    },
    Upcaster {
        type_id: 15,
        from_version: 1,
        up: lift::<legacy::AllocationReleasedV1, AllocationReleased>,
    },
];

/// One pure step: decode the old layout, convert, encode the next one.
fn lift<Old, New>(bytes: &[u8]) -> Result<Vec<u8>, DecodeError>
where
    Old: serde::de::DeserializeOwned + Into<New>,
    New: serde::Serialize,
{
    let malformed = |e: postcard::Error| DecodeError::Malformed {
        what: "payload",
        reason: e.to_string(),
    };
    let old: Old = postcard::from_bytes(bytes).map_err(malformed)?;
    postcard::to_stdvec(&old.into()).map_err(malformed)
}

/// Applies `upcasters` until `bytes` is at `current` version. A version newer than `current`,
/// or an old version with no path up, is an error.
pub fn upcast(
    upcasters: &[Upcaster],
    type_id: u32,
    version: u16,
    current: u16,
    bytes: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let mut version = version;
    let mut bytes = bytes.to_vec();
    while version < current {
        let step = upcasters
            .iter()
            .find(|u| u.type_id == type_id && u.from_version == version)
            .ok_or(DecodeError::UnsupportedVersion {
                type_id,
                version,
                current,
            })?;
        bytes = (step.up)(&bytes)?;
        version += 1;
    }
    if version > current {
        return Err(DecodeError::UnsupportedVersion {
            type_id,
            version,
            current,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    // A type that grew a field between v1 and v2, as a published event would.
    #[derive(Serialize, Deserialize)]
    struct V1 {
        name: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        name: String,
        broker: bool,
    }

    fn v1_to_v2(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let old: V1 = postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed {
            what: "payload",
            reason: e.to_string(),
        })?;
        postcard::to_stdvec(&V2 {
            name: old.name,
            broker: false,
        })
        .map_err(|e| DecodeError::Malformed {
            what: "payload",
            reason: e.to_string(),
        })
    }

    const STEPS: &[Upcaster] = &[Upcaster {
        type_id: 9,
        from_version: 1,
        up: v1_to_v2,
    }];

    #[test]
    fn lifts_old_versions_and_refuses_unknown_ones() {
        let v1 = postcard::to_stdvec(&V1 { name: "n".into() }).unwrap();
        let lifted = upcast(STEPS, 9, 1, 2, &v1).unwrap();
        assert_eq!(
            postcard::from_bytes::<V2>(&lifted).unwrap(),
            V2 {
                name: "n".into(),
                broker: false
            }
        );
        let v2 = postcard::to_stdvec(&V2 {
            name: "n".into(),
            broker: true,
        })
        .unwrap();
        assert_eq!(upcast(STEPS, 9, 2, 2, &v2).unwrap(), v2);
        assert_eq!(
            upcast(STEPS, 9, 3, 2, &v2),
            Err(DecodeError::UnsupportedVersion {
                type_id: 9,
                version: 3,
                current: 2
            })
        );
        assert_eq!(
            upcast(STEPS, 8, 1, 2, &v1),
            Err(DecodeError::UnsupportedVersion {
                type_id: 8,
                version: 1,
                current: 2
            })
        );
    }
}
