//! The three restore POSTs (bulk, to the original location, to another mailbox). Each is at
//! most once: an unknown outcome is [`crate::vb365::ErrorClass::Ambiguous`], never a resend.
//! And the device code an operator signs in with before a restore (`restoreDeviceCode`).

use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::error::ApiError;
use crate::vb365::model::{AsyncRestoreResponse, DeviceCodeResponse};
use crate::vb365::operation::Operation;
use crate::vb365::request::{
    BulkRestoreOptions, DeviceCodeRequestOptions, RestoreToDifferentLocation,
    RestoreToOriginalLocation,
};

impl Client {
    /// `POST …/organization/mailboxes/restore` (bulk). At most once: an unknown outcome is
    /// [`crate::vb365::ErrorClass::Ambiguous`].
    pub async fn restore_mailboxes(
        &self,
        session: Uuid,
        options: &BulkRestoreOptions,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let s = session.to_string();
        self.call_json(self.post_call(
            Operation::RestoreMailboxes,
            &[&s],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/mailboxes/{id}/restore` (to the original location). At most once.
    pub async fn restore_mailbox(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &RestoreToOriginalLocation,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.post_call(
            Operation::RestoreMailbox,
            &[&s, &m],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/mailboxes/{id}/restoreTo` (another mailbox). At most once.
    pub async fn restore_mailbox_to(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &RestoreToDifferentLocation,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.post_call(
            Operation::RestoreMailboxTo,
            &[&s, &m],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/restoreDeviceCode`: a device code for an operator's sign-in; its
    /// `userCode` then goes into restore requests of this session. Safe to repeat (an unused
    /// code only expires).
    pub async fn restore_device_code(
        &self,
        session: Uuid,
        options: &DeviceCodeRequestOptions,
    ) -> Result<DeviceCodeResponse, ApiError> {
        let s = session.to_string();
        self.call_json(self.post_call(
            Operation::RestoreDeviceCode,
            &[&s],
            Some(session),
            Some(options),
        ))
        .await
    }
}
