"""The embedded model server: TF Serving's gRPC API over the same models/ repository, for laptops and CI."""
