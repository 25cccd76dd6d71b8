// Replays recorded calls of TinySplat's compiled kernels, linked into this program, on another CPU
// (tests/test_kernels_aarch64.py builds it for ARM64 and runs it under qemu-user): reads the list of
// (op name, arguments) that torch.save wrote, calls each op through PyTorch's dispatcher, and saves
// each call's results as a tuple, in the list's order, for torch.load.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: replay CALLS.pt RESULTS.pt\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const c10::IValue calls = torch::jit::pickle_load(bytes);
  c10::impl::GenericList results(c10::AnyType::get());
  for (const c10::IValue& call : calls.toListRef()) {
    const auto& parts = call.toTupleRef().elements();
    const std::string name = "tinysplat_cpu::" + parts[0].toStringRef();
    const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), "");
    std::vector<c10::IValue> stack = parts[1].toListRef().vec();
    op.callBoxed(&stack);
    results.push_back(c10::ivalue::Tuple::create(std::move(stack)));
  }
  const std::vector<char> saved = torch::jit::pickle_save(c10::IValue(results));
  std::ofstream(argv[2], std::ios::binary).write(saved.data(), static_cast<std::streamsize>(saved.size()));
  std::cout << "replayed " << results.size() << " calls\n";
  return 0;
}
