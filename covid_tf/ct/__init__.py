"""CT: DICOM reading and conversion (``dicom``) and the slice-to-patient workflow (``workflow``)."""
