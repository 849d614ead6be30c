#include "base/logging.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace loadstar {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class LoggingTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(InitLogging("warn", "text").ok()); }
};

TEST_F(LoggingTest, JsonLinesCarryTimeLevelComponentMessageAndFields) {
  ASSERT_TRUE(InitLogging("info", "json").ok());
  ::testing::internal::CaptureStderr();
  Log(Level::info, "controller", {{"deployment", "org/tiny"}, {"instance", "i-1"}},
      "placing {} on {}", "org/tiny", "w\"1\"\n");
  spdlog::warn("plain {}", 42);
  Log(Level::debug, "controller", {}, "below the level");
  std::vector<std::string> lines = Lines(::testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 2u);
  nlohmann::json first = nlohmann::json::parse(lines[0]);  // throws on a malformed line
  EXPECT_EQ(first["level"], "info");
  EXPECT_EQ(first["component"], "controller");
  EXPECT_EQ(first["message"], "placing org/tiny on w\"1\"\n");
  EXPECT_EQ(first["deployment"], "org/tiny");
  EXPECT_EQ(first["instance"], "i-1");
  EXPECT_THAT(first["time"].get<std::string>(),
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"));
  nlohmann::json second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(second["level"], "warning");
  EXPECT_EQ(second["component"], "loadstar");
  EXPECT_EQ(second["message"], "plain 42");
  EXPECT_FALSE(second.contains("deployment")) << "fields of one line must not leak to the next";
}

TEST_F(LoggingTest, TextLinesAppendFieldsAsKeyValue) {
  ASSERT_TRUE(InitLogging("info", "text").ok());
  ::testing::internal::CaptureStderr();
  Log(Level::warn, "worker", {{"worker", "w1"}, {"lease", "l-9"}}, "controller: {}", "gone");
  std::vector<std::string> lines = Lines(::testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("controller: gone worker=w1 lease=l-9"));
}

TEST_F(LoggingTest, UnknownFormatOrLevelIsRefused) {
  absl::Status format = InitLogging("info", "xml");
  EXPECT_EQ(format.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(format.message()), HasSubstr("log format 'xml'"));
  EXPECT_EQ(InitLogging("loud", "text").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loadstar
