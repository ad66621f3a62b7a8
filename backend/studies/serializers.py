from rest_framework import serializers


class SiteRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class StudyOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    site = SiteRefSerializer()
    study_uid = serializers.CharField()
    description = serializers.CharField()
    received_at = serializers.DateTimeField()
    acquired_week = serializers.DateField(allow_null=True)


class SeriesOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    study_id = serializers.UUIDField()
    site_id = serializers.IntegerField()
    series_uid = serializers.CharField()
    series_number = serializers.IntegerField(allow_null=True)
    modality = serializers.CharField()
    description = serializers.CharField()
    protocol = serializers.CharField()
    sequence_family = serializers.CharField()
    status = serializers.CharField()
    instance_count = serializers.IntegerField()
    suitability = serializers.FloatField(allow_null=True)
    scanner = serializers.StringRelatedField()  # type: ignore[var-annotated]
    received_at = serializers.DateTimeField()


class InstanceOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    sop_uid = serializers.CharField()
    instance_number = serializers.IntegerField(allow_null=True)
    rows = serializers.IntegerField()
    columns = serializers.IntegerField()
    frame_count = serializers.IntegerField()
    field_strength_t = serializers.FloatField(allow_null=True)
    pixel_bandwidth_hz = serializers.FloatField(allow_null=True)
    phase_encode_direction = serializers.CharField()
    pixel_spacing_row_mm = serializers.FloatField(allow_null=True)
    pixel_spacing_col_mm = serializers.FloatField(allow_null=True)
    echo_time_ms = serializers.FloatField(allow_null=True)
    repetition_time_ms = serializers.FloatField(allow_null=True)
    inversion_time_ms = serializers.FloatField(allow_null=True)
    suitability = serializers.FloatField(allow_null=True)


class StudyListFilterSerializer(serializers.Serializer):
    site = serializers.IntegerField(required=False)


class SeriesListFilterSerializer(serializers.Serializer):
    study = serializers.UUIDField(required=False)
    site = serializers.IntegerField(required=False)
    status = serializers.CharField(required=False)
    modality = serializers.CharField(required=False, help_text="MR for images, SEG for results")
