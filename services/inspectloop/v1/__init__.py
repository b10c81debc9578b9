"""Generated from proto/inspectloop/v1/*.proto by ``inspectloop dev gen-proto``.

Do not edit by hand: edit the .proto files and run ``inspectloop dev gen-proto``.
"""
