# install() rules and the Debian package (CPack), included by the top-level
# CMakeLists.txt. `make package` builds the release preset and runs cpack;
# `cmake --install build/release` installs the same files (binaries under
# CMAKE_INSTALL_PREFIX, configuration and units at their absolute paths).
include(GNUInstallDirs)

install(TARGETS seckill-gateway seckill-worker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# the admin API's client (Python 3, standard library only)
install(PROGRAMS scripts/seckillctl DESTINATION ${CMAKE_INSTALL_BINDIR})

# The packaged configuration: config/seckill.ini with its data_dir in the
# services' state directory (StateDirectory=seckill-gateway).
file(READ ${PROJECT_SOURCE_DIR}/config/seckill.ini seckill_ini)
string(REPLACE "data_dir = /var/tmp/seckill-gateway" "data_dir = /var/lib/seckill-gateway"
       packaged_ini "${seckill_ini}")
if(packaged_ini STREQUAL seckill_ini)
  message(FATAL_ERROR "config/seckill.ini: no 'data_dir = /var/tmp/seckill-gateway' line to "
                      "point at the package's state directory")
endif()
set(seckill_ini "${packaged_ini}")
string(REPLACE "; seckill-gateway: the demo configuration used by `make run`."
       "; seckill-gateway: the packaged configuration (the demo sale of `make run`)."
       seckill_ini "${seckill_ini}")
file(WRITE ${PROJECT_BINARY_DIR}/packaging/seckill.ini "${seckill_ini}")
install(FILES ${PROJECT_BINARY_DIR}/packaging/seckill.ini DESTINATION /etc/seckill-gateway)

install(FILES packaging/seckill-gateway.service packaging/seckill-worker@.service
        DESTINATION /lib/systemd/system)
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME copyright)
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")

# maintainer scripts, executable whatever the checkout's modes
file(COPY packaging/postinst packaging/prerm packaging/postrm
     DESTINATION ${PROJECT_BINARY_DIR}/packaging
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                      WORLD_EXECUTE)
file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles "/etc/seckill-gateway/seckill.ini\n")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME seckill-gateway)
set(CPACK_PACKAGE_VENDOR "seckill-gateway")
set(CPACK_PACKAGE_CONTACT "seckill-gateway maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "flash-sale HTTP gateway, purchase workers and order sink")
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "seckill-gateway admits POST /seckill through a token bucket and an embedded\n"
       "queue, parks each request until a worker decides it, and never oversells.\n"
       "Ships seckill-gateway, seckill-worker, seckillctl (the admin API's client),\n"
       "/etc/seckill-gateway/seckill.ini and the\n"
       "systemd units seckill-gateway.service and seckill-worker@.service.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON) # library packages from the binaries
# useradd, groupadd in postinst; python3 for seckillctl
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd, python3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${PROJECT_BINARY_DIR}/packaging/conffiles;${PROJECT_BINARY_DIR}/packaging/postinst;${PROJECT_BINARY_DIR}/packaging/prerm;${PROJECT_BINARY_DIR}/packaging/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
