//! [`MeteredKms`]: a [`KeyService`] that passes every call to another and records it in a
//! [`KmsMeter`] (operation, latency, failure).

use super::KmsMeter;
use crate::crypto::SecretBytes;
use crate::kms::{
    Applied, DataKey, DataKeySpec, KeyService, KmsError, KmsKey, RotationConfig, RotationEntry,
    wire,
};
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;
use uuid::Uuid;

/// Slots of [`super::KMS_OPERATIONS`], in its order.
#[derive(Clone, Copy)]
enum Op {
    CreateKey,
    ListKeys,
    GetKey,
    RotateKey,
    EnableKey,
    DisableKey,
    EnableRotation,
    DisableRotation,
    ScheduleDeletion,
    CancelDeletion,
    ListRotations,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    ReEncrypt,
    Housekeeping,
}

/// A KMS whose calls are counted and timed.
pub struct MeteredKms {
    inner: Arc<dyn KeyService>,
    meter: Arc<KmsMeter>,
}

impl MeteredKms {
    /// `inner`, recording into `meter`.
    pub fn new(inner: Arc<dyn KeyService>, meter: Arc<KmsMeter>) -> Self {
        MeteredKms { inner, meter }
    }

    fn timed<T>(
        &self,
        op: Op,
        call: impl FnOnce(&dyn KeyService) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = call(&*self.inner);
        self.meter
            .record(op as usize, started.elapsed(), result.is_err());
        result
    }
}

impl KeyService for MeteredKms {
    fn create_key(&self, request: &wire::CreateKeyRequest) -> Result<KmsKey, KmsError> {
        self.timed(Op::CreateKey, |k| k.create_key(request))
    }

    fn list_keys(&self) -> Result<Vec<KmsKey>, KmsError> {
        self.timed(Op::ListKeys, |k| k.list_keys())
    }

    fn get_key(&self, id: Uuid) -> Result<KmsKey, KmsError> {
        self.timed(Op::GetKey, |k| k.get_key(id))
    }

    fn rotate_key(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.timed(Op::RotateKey, |k| k.rotate_key(id))
    }

    fn enable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed(Op::EnableKey, |k| k.enable_key(id))
    }

    fn disable_key(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed(Op::DisableKey, |k| k.disable_key(id))
    }

    fn enable_rotation(&self, id: Uuid, days: Option<i64>) -> Result<RotationConfig, KmsError> {
        self.timed(Op::EnableRotation, |k| k.enable_rotation(id, days))
    }

    fn disable_rotation(&self, id: Uuid) -> Result<RotationConfig, KmsError> {
        self.timed(Op::DisableRotation, |k| k.disable_rotation(id))
    }

    fn schedule_deletion(&self, id: Uuid, days: Option<i64>) -> Result<OffsetDateTime, KmsError> {
        self.timed(Op::ScheduleDeletion, |k| k.schedule_deletion(id, days))
    }

    fn cancel_deletion(&self, id: Uuid) -> Result<Applied, KmsError> {
        self.timed(Op::CancelDeletion, |k| k.cancel_deletion(id))
    }

    fn list_rotations(&self, id: Uuid) -> Result<Vec<RotationEntry>, KmsError> {
        self.timed(Op::ListRotations, |k| k.list_rotations(id))
    }

    fn encrypt(&self, id: Uuid, plain: &[u8], ctx: Option<&[u8]>) -> Result<Vec<u8>, KmsError> {
        self.timed(Op::Encrypt, |k| k.encrypt(id, plain, ctx))
    }

    fn decrypt(
        &self,
        id: Uuid,
        ciphertext: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<SecretBytes, KmsError> {
        self.timed(Op::Decrypt, |k| k.decrypt(id, ciphertext, ctx))
    }

    fn generate_data_key(
        &self,
        id: Uuid,
        spec: DataKeySpec,
        ctx: Option<&[u8]>,
    ) -> Result<DataKey, KmsError> {
        self.timed(Op::GenerateDataKey, |k| k.generate_data_key(id, spec, ctx))
    }

    fn re_encrypt(
        &self,
        source: Uuid,
        ciphertext: &[u8],
        source_ctx: Option<&[u8]>,
        destination: Uuid,
        destination_ctx: Option<&[u8]>,
    ) -> Result<Vec<u8>, KmsError> {
        self.timed(Op::ReEncrypt, |k| {
            k.re_encrypt(source, ciphertext, source_ctx, destination, destination_ctx)
        })
    }

    fn housekeeping(&self) -> Result<Option<String>, KmsError> {
        self.timed(Op::Housekeeping, |k| k.housekeeping())
    }

    fn release_connections(&self) {
        self.inner.release_connections();
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::stats::KMS_OPERATIONS;
    use crate::kms::testing::MemoryKms;

    #[test]
    fn every_call_is_recorded_under_its_operation_id() {
        let meter = Arc::new(KmsMeter::default());
        let kms = MeteredKms::new(Arc::new(MemoryKms::new()), meter.clone());
        let missing = Uuid::new_v4();
        assert!(kms.get_key(missing).is_err());
        let _ = kms.list_keys();
        let _ = kms.housekeeping();
        let snap = meter.snapshot();
        let named: Vec<(&str, u64, u64)> = snap
            .iter()
            .map(|s| (s.operation.as_str(), s.calls, s.errors))
            .collect();
        assert_eq!(
            named,
            vec![
                ("list-kms-keys", 1, 0),
                ("get-kms-key", 1, 1),
                ("housekeeping", 1, 0)
            ]
        );
        assert_eq!(KMS_OPERATIONS[Op::ReEncrypt as usize], "re-encrypt");
        assert_eq!(KMS_OPERATIONS[Op::Housekeeping as usize], "housekeeping");
        assert_eq!(KMS_OPERATIONS[Op::CreateKey as usize], "create-kms-key");
    }
}
