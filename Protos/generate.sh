#!/usr/bin/env bash
# Regenerates Sources/AspenEtcd/Generated from Protos/etcd/*.proto. The generated code is
# committed; run this only after changing a .proto file. Needs protoc (apt-get install
# protobuf-compiler) and the two plugins, built once from the package mirror:
#   git clone -b 1.39.0 https://github.com/apple/swift-protobuf && (cd swift-protobuf && swift build -c release --product protoc-gen-swift)
#   git clone -b 2.4.1 https://github.com/grpc/grpc-swift-protobuf && (cd grpc-swift-protobuf && swift build -c release --product protoc-gen-grpc-swift-2)
# and PROTOC_GEN_SWIFT / PROTOC_GEN_GRPC_SWIFT pointing at the built binaries.
set -euo pipefail
cd "$(dirname "$0")/etcd"
out=../../Sources/AspenEtcd/Generated
: "${PROTOC_GEN_SWIFT:?set PROTOC_GEN_SWIFT to the protoc-gen-swift binary}"
: "${PROTOC_GEN_GRPC_SWIFT:?set PROTOC_GEN_GRPC_SWIFT to the protoc-gen-grpc-swift-2 binary}"
protoc --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" --plugin=protoc-gen-grpc-swift="$PROTOC_GEN_GRPC_SWIFT" \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Public,Server=true,Client=true \
    -I . kv.proto rpc.proto
rm -f "$out/kv.grpc.swift"   # kv.proto declares no service
