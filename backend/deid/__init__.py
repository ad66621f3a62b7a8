"""De-identification at the door: DICOM PS3.15 Annex E Basic profile with the Clean Descriptors and
Retain Longitudinal Temporal Information (Modified Dates) options, and refusal of hostile files.

``profile`` imports only pydicom and the standard library, so every way in (upload, STOW-RS,
C-STORE, Orthanc) and the ``deidentify`` command apply exactly the same code.
"""
