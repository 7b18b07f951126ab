#pragma once
// The queries of monitoring/: every PromQL expression of the Grafana
// dashboard and of the Prometheus alert rules, and a checker that holds them
// against what a crm-worker actually exports (a scrape of /metrics).
//
// Used by tests/unit/monitoring_files_test.cc (the files' structure; the
// checker on hand-made cases) and tests/integration/monitoring_contract_test.cc
// (the checker against a running daemon). Header-only so that both test
// binaries can use it: the unit tests do not link the integration harness.
//
// The PromQL reader covers the language the files use (selectors, range and
// subquery brackets, offset/@, functions, aggregations with by/without before
// or after their arguments, binary operators with bool/on/ignoring/group_*),
// and follows which labels each sub-expression's series can carry, so that a
// grouping or matching label that cannot exist is caught where it is used:
// `sum by (api) (crm_worker_events_total)` or `... / on (topic) ...` against
// a side without `topic`. It is a checker, not an evaluator: where it cannot
// know the labels (a metric that is not ours, absent()), it checks nothing.
//
// The YAML reader reads the shape alerts.yml keeps (a list of rules with
// `expr: |` blocks, `labels:` and `annotations:` maps) and reports anything
// else as an error rather than guessing.

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

namespace crm::test::monitoring_queries {

// ---------------------------------------------------------------- exported metrics

// What a scrape of /metrics says: series names (histogram families expanded
// to _bucket/_sum/_count as the samples show them) with the label names
// their samples carry, and the families declared by # TYPE.
struct Catalog {
  std::map<std::string, std::set<std::string>> series;  // name → label names seen
  std::map<std::string, std::string> families;          // family → type
};

// Labels Prometheus adds to every scraped series.
inline const std::set<std::string>& target_labels() {
  static const std::set<std::string> kLabels = {"job", "instance"};
  return kLabels;
}

// Parses the Prometheus text format (0.0.4) far enough for names and label
// names. Label values may contain escaped quotes, commas and braces.
inline Catalog parse_exposition(const std::string& text) {
  Catalog c;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name, type;
      words >> hash >> kind >> name >> type;
      if (kind == "TYPE") c.families[name] = type;
      continue;
    }
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    std::set<std::string>& labels = c.series[line.substr(0, i)];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        if (eq == std::string::npos) break;
        labels.insert(line.substr(i, eq - i));
        i = eq + 2;  // past ="
        while (i < line.size() && line[i] != '"') i += line[i] == '\\' ? 2 : 1;
        ++i;  // past the closing quote
        if (i < line.size() && line[i] == ',') ++i;
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------- PromQL

namespace detail {

enum class Tok {
  kIdent,
  kNumber,
  kString,
  kRange,
  kLParen,
  kRParen,
  kLBrace,
  kRBrace,
  kComma,
  kOp,
  kEnd
};

struct Token {
  Tok kind;
  std::string text;
};

inline bool ident_start(char ch) {
  return std::isalpha(static_cast<unsigned char>(ch)) || ch == '_' || ch == ':';
}
inline bool ident_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == ':';
}

// Grafana's variables ($__rate_interval, ${var}) only appear inside
// strings and range brackets in our files; both are taken whole.
inline std::vector<Token> lex(std::string_view s, std::string* error) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char ch = s[i];
    if (std::isspace(static_cast<unsigned char>(ch))) {
      ++i;
    } else if (ch == '#') {  // a comment runs to the end of the line
      while (i < s.size() && s[i] != '\n') ++i;
    } else if (ch == '"' || ch == '\'' || ch == '`') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != ch) j += (s[j] == '\\' && ch != '`') ? 2 : 1;
      if (j >= s.size()) {
        *error = "unterminated string";
        return {};
      }
      out.push_back({Tok::kString, std::string(s.substr(i + 1, j - i - 1))});
      i = j + 1;
    } else if (ch == '[') {
      size_t j = s.find(']', i);
      if (j == std::string_view::npos) {
        *error = "unterminated [";
        return {};
      }
      out.push_back({Tok::kRange, std::string(s.substr(i + 1, j - i - 1))});
      i = j + 1;
    } else if (std::isdigit(static_cast<unsigned char>(ch)) ||
               (ch == '.' && i + 1 < s.size() &&
                std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
      size_t j = i;
      // Numbers, 1e3, 0x1F, and durations after offset (10m, 1h30m).
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
      out.push_back({Tok::kNumber, std::string(s.substr(i, j - i))});
      i = j;
    } else if (ident_start(ch)) {
      size_t j = i;
      while (j < s.size() && ident_char(s[j])) ++j;
      out.push_back({Tok::kIdent, std::string(s.substr(i, j - i))});
      i = j;
    } else if (ch == '(') {
      out.push_back({Tok::kLParen, "("}), ++i;
    } else if (ch == ')') {
      out.push_back({Tok::kRParen, ")"}), ++i;
    } else if (ch == '{') {
      out.push_back({Tok::kLBrace, "{"}), ++i;
    } else if (ch == '}') {
      out.push_back({Tok::kRBrace, "}"}), ++i;
    } else if (ch == ',') {
      out.push_back({Tok::kComma, ","}), ++i;
    } else {
      static const char* kOps[] = {"==", "!=", ">=", "<=", "=~", "!~", "+", "-",
                                   "*",  "/",  "%",  "^",  ">",  "<",  "=", "@"};
      bool found = false;
      for (const char* op : kOps) {
        const std::string_view o(op);
        if (s.substr(i, o.size()) == o) {
          out.push_back({Tok::kOp, std::string(o)});
          i += o.size();
          found = true;
          break;
        }
      }
      if (!found) {
        *error = std::string("unexpected character '") + ch + "'";
        return {};
      }
    }
  }
  out.push_back({Tok::kEnd, ""});
  return out;
}

inline std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

inline bool is_aggregation(const std::string& w) {
  static const std::set<std::string> kAgg = {"sum",          "min",     "max",    "avg",
                                             "group",        "stddev",  "stdvar", "count",
                                             "count_values", "bottomk", "topk",   "quantile"};
  return kAgg.count(lower(w)) > 0;
}

// Functions whose result keeps the labels of their (first) vector argument.
inline bool keeps_labels(const std::string& f) {
  static const std::set<std::string> kKeep = {"abs",
                                              "ceil",
                                              "floor",
                                              "round",
                                              "exp",
                                              "ln",
                                              "log2",
                                              "log10",
                                              "sqrt",
                                              "sgn",
                                              "clamp",
                                              "clamp_min",
                                              "clamp_max",
                                              "rate",
                                              "irate",
                                              "increase",
                                              "delta",
                                              "idelta",
                                              "deriv",
                                              "predict_linear",
                                              "holt_winters",
                                              "resets",
                                              "changes",
                                              "avg_over_time",
                                              "min_over_time",
                                              "max_over_time",
                                              "sum_over_time",
                                              "count_over_time",
                                              "quantile_over_time",
                                              "stddev_over_time",
                                              "stdvar_over_time",
                                              "last_over_time",
                                              "present_over_time",
                                              "timestamp",
                                              "sort",
                                              "sort_desc",
                                              "day_of_month",
                                              "day_of_week",
                                              "day_of_year",
                                              "days_in_month",
                                              "hour",
                                              "minute",
                                              "month",
                                              "year",
                                              "acos",
                                              "asin",
                                              "atan",
                                              "cos",
                                              "sin",
                                              "tan",
                                              "acosh",
                                              "asinh",
                                              "atanh",
                                              "cosh",
                                              "sinh",
                                              "tanh",
                                              "deg",
                                              "rad"};
  return kKeep.count(f) > 0;
}

// What an expression evaluates to, as far as labels go.
struct Value {
  bool scalar = false;  // a number or string, not a vector
  bool any = false;     // labels unknown (not our metric): nothing is checked against it
  std::set<std::string> labels;
};

class Checker {
 public:
  Checker(std::vector<Token> tokens, const Catalog* catalog, const std::string& prefix)
      : t_(std::move(tokens)), catalog_(catalog), prefix_(prefix) {}

  Value run() {
    Value v = expr(0);
    if (peek().kind != Tok::kEnd) fail("unexpected '" + peek().text + "' after the expression");
    return v;
  }

  std::vector<std::string> problems;
  std::vector<std::string> metrics;  // our metric names, in order of use
  bool failed = false;

 private:
  const Token& peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  Token next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  bool peek_word(const char* w) const {
    return peek().kind == Tok::kIdent && lower(peek().text) == w;
  }
  void fail(const std::string& message) {
    if (!failed) problems.push_back("cannot read the expression: " + message);
    failed = true;
    pos_ = t_.size() - 1;
  }
  void expect(Tok kind, const char* what) {
    if (peek().kind != kind)
      fail(std::string("expected ") + what + ", found '" + peek().text + "'");
    else
      next();
  }

  std::vector<std::string> label_list() {
    std::vector<std::string> out;
    expect(Tok::kLParen, "(");
    while (!failed && peek().kind != Tok::kRParen) {
      if (peek().kind != Tok::kIdent) {
        fail("expected a label name, found '" + peek().text + "'");
        break;
      }
      out.push_back(next().text);
      if (peek().kind == Tok::kComma) next();
    }
    expect(Tok::kRParen, ")");
    return out;
  }

  // Binary operators, loosest first; ^ is right-associative.
  static int precedence(const Token& tok) {
    if (tok.kind == Tok::kIdent) {
      const std::string w = lower(tok.text);
      if (w == "or") return 1;
      if (w == "and" || w == "unless") return 2;
      return -1;
    }
    if (tok.kind != Tok::kOp) return -1;
    const std::string& o = tok.text;
    if (o == "==" || o == "!=" || o == ">" || o == "<" || o == ">=" || o == "<=") return 3;
    if (o == "+" || o == "-") return 4;
    if (o == "*" || o == "/" || o == "%") return 5;
    if (o == "^") return 6;
    return -1;
  }

  void require(const Value& v, const std::string& label, const std::string& where) {
    if (v.scalar || v.any || target_labels().count(label)) return;
    if (!v.labels.count(label)) {
      problems.push_back(where + ": label \"" + label + "\" is not on " + describe(v));
    }
  }
  static std::string describe(const Value& v) {
    std::string s = "those series (they carry {";
    bool first = true;
    for (const auto& l : v.labels) {
      if (target_labels().count(l)) continue;
      s += (first ? "" : ", ") + l;
      first = false;
    }
    return s + "})";
  }

  Value expr(int min_prec) {
    Value lhs = unary();
    while (!failed) {
      const Token op = peek();
      const int prec = precedence(op);
      if (prec < 0 || prec < min_prec) break;
      next();
      const std::string o = lower(op.text);
      if (peek_word("bool")) next();
      std::vector<std::string> on, ignoring, group;
      bool has_on = false, group_left = false, group_right = false;
      if (peek_word("on")) {
        next();
        on = label_list();
        has_on = true;
      } else if (peek_word("ignoring")) {
        next();
        ignoring = label_list();
      }
      if (peek_word("group_left") || peek_word("group_right")) {
        (lower(next().text) == "group_left" ? group_left : group_right) = true;
        if (peek().kind == Tok::kLParen) group = label_list();
      }
      Value rhs = expr(o == "^" ? prec : prec + 1);
      lhs = combine(o, lhs, rhs, has_on, on, ignoring, group_left, group_right, group);
    }
    return lhs;
  }

  Value combine(const std::string& o, const Value& a, const Value& b, bool has_on,
                const std::vector<std::string>& on, const std::vector<std::string>& ignoring,
                bool group_left, bool group_right, const std::vector<std::string>& group) {
    if (a.scalar && b.scalar) return a;
    if (a.scalar) return b;
    if (b.scalar) return a;
    for (const auto& l : on) {
      require(a, l, "on (" + l + "), left side");
      require(b, l, "on (" + l + "), right side");
    }
    for (const auto& l : group) require(group_left ? b : a, l, "group_*(" + l + ")");
    if (o == "or") {
      Value v;
      v.any = a.any || b.any;
      v.labels = a.labels;
      v.labels.insert(b.labels.begin(), b.labels.end());
      return v;
    }
    // One-to-one matching on every label (no on/ignoring): both sides must
    // carry the same label names, or nothing ever matches.
    if (!has_on && ignoring.empty() && !group_left && !group_right && !a.any && !b.any) {
      std::set<std::string> la, lb;
      for (const auto& l : a.labels)
        if (!target_labels().count(l)) la.insert(l);
      for (const auto& l : b.labels)
        if (!target_labels().count(l)) lb.insert(l);
      if (la != lb) {
        problems.push_back("'" + o + "' matches on every label, but the left side has " +
                           describe(a) + " and the right side " + describe(b) +
                           ": nothing would match (use on(...) or aggregate first)");
      }
    }
    Value v = group_right ? b : a;
    v.labels.insert(group.begin(), group.end());
    return v;
  }

  Value unary() {
    if (peek().kind == Tok::kOp && (peek().text == "-" || peek().text == "+")) {
      next();
      return unary();
    }
    Value v = primary();
    // Postfix: range or subquery brackets, offset, @.
    while (!failed) {
      if (peek().kind == Tok::kRange) {
        next();
      } else if (peek_word("offset")) {
        next();
        if (peek().kind == Tok::kOp && peek().text == "-") next();
        expect(Tok::kNumber, "a duration");
      } else if (peek().kind == Tok::kOp && peek().text == "@") {
        next();
        if (peek().kind == Tok::kIdent) {  // start() / end()
          next();
          expect(Tok::kLParen, "(");
          expect(Tok::kRParen, ")");
        } else {
          expect(Tok::kNumber, "a timestamp");
        }
      } else {
        break;
      }
    }
    return v;
  }

  Value primary() {
    const Token tok = peek();
    switch (tok.kind) {
      case Tok::kNumber:
      case Tok::kString: {
        next();
        Value v;
        v.scalar = true;
        return v;
      }
      case Tok::kLParen: {
        next();
        Value v = expr(0);
        expect(Tok::kRParen, ")");
        return v;
      }
      case Tok::kLBrace:
        return selector("");
      case Tok::kIdent:
        break;
      default:
        fail("unexpected '" + tok.text + "'");
        return {};
    }
    const std::string word = tok.text;
    const Token after = peek(1);
    if (is_aggregation(word) && (after.kind == Tok::kLParen ||
                                 (after.kind == Tok::kIdent &&
                                  (lower(after.text) == "by" || lower(after.text) == "without")))) {
      return aggregation();
    }
    if (after.kind == Tok::kLParen) return call();
    if (lower(word) == "inf" || lower(word) == "nan") {
      next();
      Value v;
      v.scalar = true;
      return v;
    }
    return selector(word);
  }

  Value aggregation() {
    const std::string op = lower(next().text);
    std::vector<std::string> grouping;
    bool by = false, without = false;
    auto modifier = [&] {
      if (peek_word("by") || peek_word("without")) {
        (lower(next().text) == "by" ? by : without) = true;
        grouping = label_list();
      }
    };
    modifier();
    expect(Tok::kLParen, "(");
    std::vector<Value> args;
    while (!failed && peek().kind != Tok::kRParen) {
      args.push_back(expr(0));
      if (peek().kind == Tok::kComma)
        next();
      else
        break;
    }
    expect(Tok::kRParen, ")");
    if (!by && !without) modifier();
    if (failed) return {};
    if (args.empty()) {
      fail(op + "() without an argument");
      return {};
    }
    const Value& inner = args.back();
    Value v;
    if (op == "topk" || op == "bottomk") {
      v = inner;  // keeps the series as they are
    } else if (by) {
      // The result carries exactly these labels, whatever the input was.
      for (const auto& l : grouping)
        require(inner, l, std::string(op).append(" by (").append(l).append(")"));
      v.labels.insert(grouping.begin(), grouping.end());
    } else if (without) {
      v = inner;
      for (const auto& l : grouping) v.labels.erase(l);
    }
    if (op == "count_values") v.any = true;  // adds a label named by its string argument
    return v;
  }

  Value call() {
    const std::string f = next().text;
    expect(Tok::kLParen, "(");
    std::vector<Value> args;
    while (!failed && peek().kind != Tok::kRParen) {
      args.push_back(expr(0));
      if (peek().kind == Tok::kComma)
        next();
      else
        break;
    }
    expect(Tok::kRParen, ")");
    if (failed) return {};
    Value v;
    if (f == "time" || f == "pi" || f == "scalar") {
      v.scalar = true;
    } else if (f == "vector") {
      // No labels at all.
    } else if (f == "histogram_quantile" && args.size() == 2) {
      require(args[1], "le", "histogram_quantile: bucket label");
      v = args[1];
      v.labels.erase("le");
    } else if ((f == "label_replace" || f == "label_join") && !args.empty()) {
      v = args[0];
      v.any = true;  // adds a label named by a string argument
    } else if (keeps_labels(f)) {
      for (const Value& a : args) {
        if (!a.scalar) {
          v = a;
          break;
        }
      }
    } else {
      v.any = true;  // absent(), absent_over_time(), and anything new
    }
    return v;
  }

  Value selector(const std::string& name) {
    if (!name.empty()) next();
    std::vector<std::string> matched;
    if (peek().kind == Tok::kLBrace) {
      next();
      while (!failed && peek().kind != Tok::kRBrace) {
        if (peek().kind != Tok::kIdent) {
          fail("expected a label name in {...}, found '" + peek().text + "'");
          break;
        }
        matched.push_back(next().text);
        if (peek().kind != Tok::kOp)
          fail("expected a matcher after " + matched.back());
        else
          next();
        expect(Tok::kString, "a quoted label value");
        if (peek().kind == Tok::kComma) next();
      }
      expect(Tok::kRBrace, "}");
    }
    Value v;
    if (name.rfind(prefix_, 0) != 0 || name.empty()) {
      v.any = true;
      return v;
    }
    metrics.push_back(name);
    if (catalog_ == nullptr) {
      v.any = true;
      return v;
    }
    auto it = catalog_->series.find(name);
    if (it == catalog_->series.end()) {
      problems.push_back("metric " + name + " is not exported" + family_hint(name));
      v.any = true;  // one problem per metric, not one per use of its labels
      return v;
    }
    v.labels = it->second;
    v.labels.insert(target_labels().begin(), target_labels().end());
    for (const auto& l : matched) {
      if (l == "__name__") continue;
      require(v, l, std::string(name).append("{").append(l).append("=...}"));
    }
    return v;
  }

  // A histogram's family name is not a series: say so.
  std::string family_hint(const std::string& name) const {
    auto f = catalog_->families.find(name);
    if (f != catalog_->families.end() && f->second == "histogram") {
      return " (it is a histogram family: use " + name + "_bucket, _sum or _count)";
    }
    if (f != catalog_->families.end()) return " (declared by # TYPE, but it has no series yet)";
    return "";
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  const Catalog* catalog_;
  std::string prefix_;
};

}  // namespace detail

struct Analysis {
  std::vector<std::string> metrics;   // our metric names used (in order, repeats kept)
  std::vector<std::string> problems;  // empty: the expression is fine against the catalog
};

// Reads `expr` and checks every use of a metric named `prefix`* against
// `catalog` (nullptr: only read it and list the metrics).
inline Analysis analyze(const std::string& expr, const Catalog* catalog,
                        const std::string& prefix = "crm_worker_") {
  Analysis a;
  std::string error;
  std::vector<detail::Token> tokens = detail::lex(expr, &error);
  if (!error.empty()) {
    a.problems.push_back("cannot read the expression: " + error);
    return a;
  }
  detail::Checker c(std::move(tokens), catalog, prefix);
  c.run();
  a.metrics = std::move(c.metrics);
  a.problems = std::move(c.problems);
  return a;
}

// ---------------------------------------------------------------- the files

struct Query {
  std::string where;  // "dashboard panel 12 \"Title\" target A", "alert CrmWorkerDown"
  std::string expr;
};

// Every panel of a dashboard, rows' nested panels included.
inline std::vector<const boost::json::object*> dashboard_panels(
    const boost::json::value& dashboard) {
  std::vector<const boost::json::object*> out;
  const boost::json::object* root = dashboard.if_object();
  if (root == nullptr) return out;
  const boost::json::value* panels = root->if_contains("panels");
  if (panels == nullptr || !panels->is_array()) return out;
  for (const auto& p : panels->as_array()) {
    if (!p.is_object()) continue;
    out.push_back(&p.as_object());
    if (const auto* nested = p.as_object().if_contains("panels"); nested && nested->is_array()) {
      for (const auto& n : nested->as_array()) {
        if (n.is_object()) out.push_back(&n.as_object());
      }
    }
  }
  return out;
}

inline std::vector<Query> dashboard_queries(const boost::json::value& dashboard) {
  std::vector<Query> out;
  for (const boost::json::object* p : dashboard_panels(dashboard)) {
    const auto* targets = p->if_contains("targets");
    if (targets == nullptr || !targets->is_array()) continue;
    std::string title;
    if (const auto* t = p->if_contains("title"); t && t->is_string())
      title = t->as_string().c_str();
    std::string id;
    if (const auto* i = p->if_contains("id"); i && i->is_int64())
      id = std::to_string(i->as_int64());
    for (const auto& t : targets->as_array()) {
      if (!t.is_object()) continue;
      const auto* expr = t.as_object().if_contains("expr");
      const auto* ref = t.as_object().if_contains("refId");
      if (expr == nullptr || !expr->is_string()) continue;
      std::string where = "dashboard panel ";
      where.append(id).append(" \"").append(title).append("\" target ");
      where.append(ref && ref->is_string() ? ref->as_string().c_str() : "?");
      out.push_back({std::move(where), expr->as_string().c_str()});
    }
  }
  return out;
}

// One rule of a Prometheus rule file, as alerts.yml writes it.
struct Rule {
  std::string kind;  // "alert" or "record"
  std::string name;
  std::string expr;
  std::string for_duration;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;  // the text after the key (">-" for a block)
};

namespace detail {

inline size_t indent_of(const std::string& line) {
  size_t i = line.find_first_not_of(' ');
  return i == std::string::npos ? line.size() : i;
}
inline std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}
inline std::string unquote(const std::string& s) {
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) {
    return s.substr(1, s.size() - 2);
  }
  return s;
}

}  // namespace detail

// Reads the rules of a rule file written in alerts.yml's shape; `error` says
// what it could not read (a rule without an expression, an inline or quoted
// expression, which this reader does not unescape).
inline std::vector<Rule> read_rules(const std::string& yaml, std::string* error) {
  using detail::indent_of;
  using detail::trim;
  std::vector<std::string> lines;
  {
    std::istringstream in(yaml);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  std::vector<Rule> rules;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string t = trim(lines[i]);
    std::string kind;
    if (t.rfind("- alert:", 0) == 0)
      kind = "alert";
    else if (t.rfind("- record:", 0) == 0)
      kind = "record";
    else
      continue;
    Rule r;
    r.kind = kind;
    r.name = detail::unquote(trim(t.substr(t.find(':') + 1)));
    const size_t rule_indent = indent_of(lines[i]) + 2;  // the keys under "- "
    size_t j = i + 1;
    std::string section;  // labels / annotations
    size_t section_indent = 0;
    for (; j < lines.size(); ++j) {
      const std::string& l = lines[j];
      const std::string lt = trim(l);
      if (lt.empty() || lt[0] == '#') continue;
      const size_t ind = indent_of(l);
      if (ind < rule_indent || (ind == rule_indent && lt[0] == '-')) break;
      if (ind == rule_indent) {
        section.clear();
        const std::string key = lt.substr(0, lt.find(':'));
        const std::string value = trim(lt.substr(lt.find(':') + 1));
        if (key == "expr") {
          if (value != "|" && value != "|-" && value != "|+") {
            *error = "rule " + r.name + ": write expr as a block (expr: |), not inline";
            return {};
          }
          size_t k = j + 1;
          std::string text;
          for (; k < lines.size(); ++k) {
            if (!trim(lines[k]).empty() && indent_of(lines[k]) <= rule_indent) break;
            text += trim(lines[k]) + "\n";
          }
          r.expr = trim(text);
          j = k - 1;
        } else if (key == "for") {
          r.for_duration = value;
        } else if (key == "labels" || key == "annotations") {
          section = key;
          section_indent = 0;
        }
        continue;
      }
      if (!section.empty()) {
        if (section_indent == 0) section_indent = ind;
        if (ind != section_indent) continue;  // a block value's continuation lines
        const std::string key = lt.substr(0, lt.find(':'));
        const std::string value = detail::unquote(trim(lt.substr(lt.find(':') + 1)));
        (section == "labels" ? r.labels : r.annotations)[key] = value;
      }
    }
    if (r.expr.empty()) {
      *error = "rule " + r.name + " has no expr";
      return {};
    }
    rules.push_back(std::move(r));
    i = j - 1;
  }
  if (rules.empty()) *error = "no rules found";
  return rules;
}

inline std::vector<Query> rule_queries(const std::vector<Rule>& rules) {
  std::vector<Query> out;
  out.reserve(rules.size());
  for (const Rule& r : rules) out.push_back({r.kind + " " + r.name, r.expr});
  return out;
}

}  // namespace crm::test::monitoring_queries
