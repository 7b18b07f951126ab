# ctest grafana_dashboard_queries: every query of the Grafana dashboard is
# valid PromQL, checked by promtool (the same parser Prometheus uses), not by
# Grafana at 3 am. The queries are written into a throwaway rule file, one
# recording rule each, with Grafana's variables replaced by values of the
# right kind ($__rate_interval → 5m, $job → .*).
#
#   cmake -DPROMTOOL=/usr/bin/promtool -DDASHBOARD=.../crm-worker.json
#         -DWORK_DIR=<scratch dir> -P check_dashboard_queries.cmake

cmake_minimum_required(VERSION 3.19)  # string(JSON)

foreach(var PROMTOOL DASHBOARD WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "-D${var}=... is required")
  endif()
endforeach()

file(READ "${DASHBOARD}" dashboard)
string(JSON panel_count ERROR_VARIABLE err LENGTH "${dashboard}" panels)
if(err)
  message(FATAL_ERROR "${DASHBOARD}: ${err}")
endif()

set(rules "")
set(count 0)

# Appends the targets of the panel at JSON path `ARGN` to `rules`.
function(add_targets)
  string(JSON n ERROR_VARIABLE err LENGTH "${dashboard}" ${ARGN} targets)
  if(err OR n EQUAL 0)
    return()
  endif()
  string(JSON title ERROR_VARIABLE err GET "${dashboard}" ${ARGN} title)
  math(EXPR last "${n} - 1")
  foreach(t RANGE ${last})
    string(JSON expr ERROR_VARIABLE err GET "${dashboard}" ${ARGN} targets ${t} expr)
    if(err)
      message(FATAL_ERROR "panel \"${title}\" target ${t}: no expr")
    endif()
    string(REPLACE "$__rate_interval" "5m" expr "${expr}")
    string(REPLACE "$__interval" "1m" expr "${expr}")
    string(REPLACE "$__range" "1h" expr "${expr}")
    string(REGEX REPLACE "\\$\\{?[A-Za-z_][A-Za-z0-9_]*\\}?" ".*" expr "${expr}")
    # As a JSON string (a rule file may be JSON: YAML is a superset).
    string(REPLACE "\\" "\\\\" expr "${expr}")
    string(REPLACE "\"" "\\\"" expr "${expr}")
    string(REPLACE "\n" "\\n" expr "${expr}")
    string(REPLACE "\t" " " expr "${expr}")
    math(EXPR c "${count} + 1")
    set(count ${c} PARENT_SCOPE)
    set(count ${c})
    string(APPEND rules "{\"record\": \"dashboard:query_${c}\", \"expr\": \"${expr}\"},\n")
    set(rules "${rules}" PARENT_SCOPE)
    message(STATUS "panel \"${title}\": ${expr}")
  endforeach()
endfunction()

math(EXPR last_panel "${panel_count} - 1")
foreach(p RANGE ${last_panel})
  add_targets(panels ${p})
  # Panels inside a collapsed row.
  string(JSON nested ERROR_VARIABLE err LENGTH "${dashboard}" panels ${p} panels)
  if(NOT err AND nested GREATER 0)
    math(EXPR last_nested "${nested} - 1")
    foreach(q RANGE ${last_nested})
      add_targets(panels ${p} panels ${q})
    endforeach()
  endif()
endforeach()

if(count EQUAL 0)
  message(FATAL_ERROR "${DASHBOARD}: no queries found")
endif()
string(REGEX REPLACE ",\n$" "\n" rules "${rules}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(rule_file "${WORK_DIR}/dashboard-queries.rules.json")
file(WRITE "${rule_file}" "{\"groups\": [{\"name\": \"dashboard\", \"rules\": [\n${rules}]}]}\n")
execute_process(COMMAND "${PROMTOOL}" check rules "${rule_file}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "promtool rejected a dashboard query (${rule_file}); see above")
endif()
message(STATUS "${count} dashboard queries are valid PromQL")
