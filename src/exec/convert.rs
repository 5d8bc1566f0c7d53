//! Conversions from the job's types to the client's, where the two name one vendor concept
//! separately (the job format must not depend on the client, nor the client on job files). A
//! leaf: imports neither the engine nor any step kind.

use crate::jobs;
use crate::vb365;

/// The job's Microsoft 365 region (`officeRegion`, `deviceCode.region`) as the client sends it.
pub(crate) fn office_region(r: jobs::OfficeRegion) -> vb365::OfficeRegion {
    match r {
        jobs::OfficeRegion::Worldwide => vb365::OfficeRegion::Worldwide,
        jobs::OfficeRegion::Germany => vb365::OfficeRegion::Germany,
        jobs::OfficeRegion::China => vb365::OfficeRegion::China,
        jobs::OfficeRegion::USDefence => vb365::OfficeRegion::USDefence,
        jobs::OfficeRegion::USGovernment => vb365::OfficeRegion::USGovernment,
    }
}
