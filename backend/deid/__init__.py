"""De-identification at the door: DICOM PS3.15 Annex E Basic profile with the Clean Descriptors and
Retain Longitudinal Temporal Information (Modified Dates) options, and refusal of hostile files.

``profile`` (the API), ``fast`` (the same profile applied to the encoded bytes: the door's path),
``safety`` (the pre-parse walk and bounded inflation), ``table_e11`` (PS3.15 Table E.1-1 as data)
and ``table`` (our allow-lists) import only pydicom, NumPy and the standard library, so every
way in (upload, STOW-RS, C-STORE, Orthanc) and the ``deidentify`` command apply exactly the same
code. The conformance declaration is ``docs/deidentification.md``.
"""
