from rest_framework import serializers


class TokenCreateInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=200, style={"input_type": "password"})
    name = serializers.CharField(max_length=100, default="api")


class TokenCreateOutputSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once; send as 'Authorization: Bearer <token>'.")
    prefix = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class MembershipOutputSerializer(serializers.Serializer):
    site_id = serializers.IntegerField()
    site_name = serializers.CharField(source="site.name")
    role = serializers.CharField()


class MeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    is_superuser = serializers.BooleanField()
    memberships = MembershipOutputSerializer(many=True)


class SiteOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
