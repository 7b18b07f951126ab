# Writes a C++ source with every migration file as a raw string:
#   cmake -DOUT=<file.cc> -DFILES=<a.sql;b.sql> -P embed_migrations.cmake
# The file name "0001_init.sql" gives version 1 and name "init".
set(body "// Generated from db/migrations/*.sql. Do not edit.\n#include \"db/migrations.h\"\n\nnamespace crm::db {\n\nconst std::vector<Migration>& embedded_migrations() {\n  static const std::vector<Migration> all = {\n")
foreach(f IN LISTS FILES)
  get_filename_component(base ${f} NAME_WE)
  string(REGEX MATCH "^([0-9]+)_(.*)$" _ ${base})
  if(NOT CMAKE_MATCH_1)
    message(FATAL_ERROR "migration ${f}: name must be NNNN_description.sql")
  endif()
  math(EXPR version "${CMAKE_MATCH_1}")
  set(name ${CMAKE_MATCH_2})
  file(READ ${f} sql)
  string(APPEND body "      {${version}, \"${name}\", R\"crmsql(${sql})crmsql\"},\n")
endforeach()
string(APPEND body "  };\n  return all;\n}\n\n}  // namespace crm::db\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
