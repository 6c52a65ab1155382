#!/usr/bin/env bash
# Regenerates Sources/AspenEtcd/Generated from Protos/etcd/*.proto. The generated code is
# committed; run this only after changing a .proto file. Needs protoc (apt-get install
# protobuf-compiler) and the two plugins, built as products of this package's dependencies:
#   swift build -c release --product protoc-gen-swift
#   swift build -c release --product protoc-gen-grpc-swift-2
# and PROTOC_GEN_SWIFT / PROTOC_GEN_GRPC_SWIFT pointing at the built binaries, e.g.
#   PROTOC_GEN_SWIFT=.build/release/protoc-gen-swift PROTOC_GEN_GRPC_SWIFT=.build/release/protoc-gen-grpc-swift-2 bash Protos/generate.sh
set -euo pipefail
PROTOC_GEN_SWIFT=$(realpath "${PROTOC_GEN_SWIFT:?set PROTOC_GEN_SWIFT to the protoc-gen-swift binary}")
PROTOC_GEN_GRPC_SWIFT=$(realpath "${PROTOC_GEN_GRPC_SWIFT:?set PROTOC_GEN_GRPC_SWIFT to the protoc-gen-grpc-swift-2 binary}")
cd "$(dirname "$0")/etcd"
out=../../Sources/AspenEtcd/Generated
protoc --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" --plugin=protoc-gen-grpc-swift="$PROTOC_GEN_GRPC_SWIFT" \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Public,Server=true,Client=true \
    -I . kv.proto rpc.proto
rm -f "$out/kv.grpc.swift"   # kv.proto declares no service
