#include "reprocheck/model_file.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <fstream>

#include "reprocheck/error.h"

namespace reprocheck {

std::string model_file_problem(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return "no such file; check the path";
  if (S_ISDIR(st.st_mode)) return "is a directory, not a model file; pass the .pt file inside it";
  if (!S_ISREG(st.st_mode)) return "is not a regular file (a FIFO, socket or device); pass the model's .pt file";
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot be read (permission denied?); check its permissions";
  if (st.st_size == 0) return "is empty; export the model again";
  char head[4] = {};
  in.read(head, sizeof head);
  const bool zip = in.gcount() == 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
  if (!zip) {
    if (static_cast<unsigned char>(head[0]) == 0x80)
      return fmt::format("is a torch.save checkpoint in the legacy pickle format, not TorchScript; {}", kExportHint);
    return fmt::format("is not a TorchScript archive (not a zip file); {}", kExportHint);
  }
  return "";
}

void check_model_file(const std::string& path) {
  if (auto why = model_file_problem(path); !why.empty())
    throw InputError(fmt::format("cannot load model '{}': {}", path, why));
}

}  // namespace reprocheck
